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
