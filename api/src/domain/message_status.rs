//! The values of `messages.status` ([`MessageStatus`], the message's place in the delivery
//! queue) and `messages.delivery` ([`Delivery`], WeChat's report once it arrives).
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text_enum::text_enum;

/// Delivery state of a message.
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
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting for (another) attempt.
    Queued,
    /// An attempt is in flight.
    Sending,
    /// WeChat accepted it.
    Sent,
    /// Given up; see `errcode` and `errmsg`.
    Failed,
    /// WeChat took it but holds it for review (errcode 40252): never resent. It ends `failed`
    /// with delivery `blocked` if review blocks it, or `sent` (delivery `unknown`, or WeChat's
    /// late report) once an hour has passed without it being listed as blocked.
    UnderReview,
}

text_enum!(MessageStatus, "message status" {
    Queued => "queued",
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
    UnderReview => "under_review",
});

/// Delivery of a template message as WeChat reports it. No `ToSchema`: the API's `delivery`
/// field also says `unknown` before a report arrives, so it is documented as a string.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    diesel::AsExpression,
    diesel::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// It reached the user (WeChat's `success`).
    Delivered,
    /// The user blocked the account (`failed:user block`), or WeChat's content review
    /// blocked the message (it was held with 40252 and listed by `queryblocktmplmsg`).
    Blocked,
    /// Any other failure (`failed: system failed`, …).
    Failed,
}

text_enum!(Delivery, "delivery" {
    Delivered => "delivered",
    Blocked => "blocked",
    Failed => "failed",
});

impl Delivery {
    /// The API's `delivery` value: the report, or `unknown` while there is none (the column
    /// is NULL until WeChat reports, and a report may never come).
    pub fn shown(report: Option<Self>) -> &'static str {
        report.map_or("unknown", Self::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::text_enum::assert_text_enum;

    #[test]
    fn every_status_round_trips_and_unknown_text_is_refused() {
        assert_text_enum::<MessageStatus>(
            &["queued", "sending", "sent", "failed", "under_review"],
            &["", "Queued", "unknown", "sent ", "delivered", "underreview"],
        );
    }

    #[test]
    fn every_delivery_round_trips_and_unknown_text_is_refused() {
        assert_text_enum::<Delivery>(
            &["delivered", "blocked", "failed"],
            &["", "unknown", "success", "sent"],
        );
    }

    #[test]
    fn no_report_is_shown_as_unknown() {
        assert_eq!(Delivery::shown(None), "unknown");
        assert_eq!(Delivery::shown(Some(Delivery::Blocked)), "blocked");
    }
}
