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
    fn every_role_round_trips_and_unknown_text_is_refused_not_downgraded() {
        super::super::text_enum::assert_text_enum::<Role>(
            &["user", "admin"],
            &["", "Admin", "root", "admin "],
        );
    }
}
