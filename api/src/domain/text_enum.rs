//! Closed sets of values kept in TEXT columns. One `Variant => "text"` list per type gives its
//! `as_str`, its parser and its diesel mapping, so each stored string is written exactly once.
//! Text in the database that is not in the list fails to load instead of becoming a default:
//! the CHECK constraints keep such rows out, and should one appear anyway (a newer schema than
//! this binary), guessing would misreport the row, or grant a role nobody gave.

/// For an enum deriving `diesel::AsExpression` and `diesel::FromSqlRow` with
/// `#[diesel(sql_type = diesel::sql_types::Text)]`: implements `ALL`, `as_str`, `parse` and
/// `ToSql`/`FromSql<Text, Pg>` from the list. Every variant must be listed, or `as_str` does
/// not compile.
macro_rules! text_enum {
    ($ty:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The text stored in the database; also the JSON value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value whose [`as_str`](Self::as_str) is `text`.
            pub fn parse(text: &str) -> Result<Self, $crate::domain::DomainError> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == text)
                    .ok_or_else(|| {
                        let message = format!(concat!("unknown ", $what, " {:?}"), text);
                        $crate::domain::DomainError(message)
                    })
            }
        }

        #[cfg(test)]
        impl $crate::domain::text_enum::TextEnum for $ty {
            fn all() -> &'static [Self] {
                Self::ALL
            }
            fn text(self) -> &'static str {
                self.as_str()
            }
            fn from_text(text: &str) -> Option<Self> {
                Self::parse(text).ok()
            }
        }

        impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for $ty {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
            ) -> diesel::serialize::Result {
                <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
                    self.as_str(),
                    out,
                )
            }
        }

        impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for $ty {
            fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
                Ok(Self::parse(std::str::from_utf8(value.as_bytes())?)?)
            }
        }
    };
}

pub(super) use text_enum;

/// What the tests of every text enum check, generically.
#[cfg(test)]
pub(super) trait TextEnum:
    Copy + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned + 'static
{
    fn all() -> &'static [Self];
    fn text(self) -> &'static str;
    fn from_text(text: &str) -> Option<Self>;
}

/// Every value round-trips through its text and its JSON, the texts are exactly `expected`,
/// and each of `refused` is not a value.
#[cfg(test)]
pub(super) fn assert_text_enum<T: TextEnum>(expected: &[&str], refused: &[&str]) {
    for &v in T::all() {
        assert_eq!(T::from_text(v.text()), Some(v));
        assert_eq!(serde_json::to_value(v).expect("serializes"), v.text());
        let parsed: T = serde_json::from_value(v.text().into()).expect("parses");
        assert_eq!(parsed, v);
    }
    let texts: Vec<_> = T::all().iter().map(|v| v.text()).collect();
    assert_eq!(texts, expected);
    for bad in refused {
        assert!(T::from_text(bad).is_none(), "{bad:?}");
    }
}
