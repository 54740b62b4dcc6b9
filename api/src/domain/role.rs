//! The value of `users.role`: what an account may do.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text_enum::text_enum;

/// A user's role.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ToSchema,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May act on itself only.
    User,
    /// May send to and read for any user.
    Admin,
}

text_enum!(Role, "role" {
    User => "user",
    Admin => "admin",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_text_and_json() {
        for &r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
            assert_eq!(serde_json::to_value(r).expect("serializes"), r.as_str());
            assert_eq!(
                serde_json::from_value::<Role>(r.as_str().into()).expect("parses"),
                r
            );
        }
        let texts: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts, ["user", "admin"]);
    }

    #[test]
    fn unknown_text_is_refused_not_downgraded() {
        for bad in ["", "Admin", "root", "admin "] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }
}
