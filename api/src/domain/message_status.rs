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
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for (another) attempt.
    Queued,
    /// An attempt is in flight.
    Sending,
    /// WeChat accepted it.
    Sent,
    /// Given up; see `errcode` and `errmsg`.
    Failed,
}

text_enum!(MessageStatus, "message status" {
    Queued => "queued",
    Sending => "sending",
    Sent => "sent",
    Failed => "failed",
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
    /// The user blocked the account (`failed:user block`).
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

    #[test]
    fn every_status_round_trips_through_text_and_json() {
        assert_eq!(MessageStatus::ALL.len(), 4);
        for &s in MessageStatus::ALL {
            assert_eq!(MessageStatus::parse(s.as_str()), Ok(s));
            assert_eq!(serde_json::to_value(s).expect("serializes"), s.as_str());
            assert_eq!(
                serde_json::from_value::<MessageStatus>(s.as_str().into()).expect("parses"),
                s
            );
        }
        let texts: Vec<_> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["queued", "sending", "sent", "failed"]);
    }

    #[test]
    fn every_delivery_round_trips_through_text_and_json() {
        assert_eq!(Delivery::ALL.len(), 3);
        for &d in Delivery::ALL {
            assert_eq!(Delivery::parse(d.as_str()), Ok(d));
            assert_eq!(serde_json::to_value(d).expect("serializes"), d.as_str());
            assert_eq!(
                serde_json::from_value::<Delivery>(d.as_str().into()).expect("parses"),
                d
            );
        }
        let texts: Vec<_> = Delivery::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(texts, ["delivered", "blocked", "failed"]);
    }

    #[test]
    fn no_report_is_shown_as_unknown() {
        assert_eq!(Delivery::shown(None), "unknown");
        assert_eq!(Delivery::shown(Some(Delivery::Blocked)), "blocked");
    }

    #[test]
    fn unknown_text_is_refused() {
        for bad in ["", "Queued", "unknown", "sent ", "delivered"] {
            assert!(MessageStatus::parse(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "unknown", "success", "sent"] {
            assert!(Delivery::parse(bad).is_err(), "{bad:?}");
        }
    }
}
