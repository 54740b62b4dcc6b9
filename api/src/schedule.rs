//! When messages may go out: quiet hours in the account's time zone, and the day a per-user
//! daily cap counts in.
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

/// A daily window (`22:00-08:00`) during which only urgent messages are sent. It may wrap
/// midnight; the start is inside it, the end is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    start: NaiveTime,
    end: NaiveTime,
}

impl QuietHours {
    /// Parses `HH:MM-HH:MM` (24-hour clock); the two times must differ.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (start, end) = raw
            .split_once('-')
            .ok_or_else(|| format!("must be HH:MM-HH:MM, got {raw:?}"))?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t.trim(), "%H:%M")
                .map_err(|_| format!("must be HH:MM-HH:MM (24-hour clock), got {raw:?}"))
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(format!("start and end must differ, got {raw:?}"));
        }
        Ok(Self { start, end })
    }

    /// Whether `t` (a wall-clock time) falls inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }
}

impl std::fmt::Display for QuietHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// The account's sending calendar (`WXBIND_QUIET_HOURS`, `WXBIND_TIMEZONE`,
/// `WXBIND_MAX_MESSAGES_PER_USER_PER_DAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Quiet hours, if any.
    pub quiet_hours: Option<QuietHours>,
    /// The account's time zone: quiet hours and days are its wall clock.
    pub timezone: Tz,
    /// Most messages one user is sent per day; `None` is no cap.
    pub max_per_user_per_day: Option<u32>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            quiet_hours: None,
            timezone: chrono_tz::Asia::Shanghai,
            max_per_user_per_day: None,
        }
    }
}

impl Schedule {
    /// Whether `now` is inside quiet hours.
    pub fn is_quiet(&self, now: DateTime<Utc>) -> bool {
        self.quiet_hours
            .is_some_and(|q| q.contains(now.with_timezone(&self.timezone).time()))
    }

    /// The account's calendar day at `now`.
    pub fn day(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.timezone).date_naive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hm: &str) -> NaiveTime {
        NaiveTime::parse_from_str(hm, "%H:%M").expect("time")
    }

    #[test]
    fn windows_that_wrap_midnight_and_those_that_do_not() {
        let night = QuietHours::parse("22:00-08:00").expect("window");
        for (t, quiet) in [
            ("21:59", false),
            ("22:00", true),
            ("23:59", true),
            ("00:00", true),
            ("07:59", true),
            ("08:00", false),
            ("12:00", false),
        ] {
            assert_eq!(night.contains(at(t)), quiet, "{t}");
        }
        let lunch = QuietHours::parse("12:00-13:30").expect("window");
        assert!(lunch.contains(at("12:00")) && lunch.contains(at("13:29")));
        assert!(!lunch.contains(at("13:30")) && !lunch.contains(at("11:59")));
        assert_eq!(night.to_string(), "22:00-08:00");
    }

    #[test]
    fn bad_windows_are_refused() {
        for raw in [
            "",
            "22:00",
            "22-08",
            "25:00-08:00",
            "08:00-08:00",
            "8am-9pm",
        ] {
            assert!(QuietHours::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn quiet_hours_and_days_follow_the_account_time_zone() {
        let schedule = Schedule {
            quiet_hours: Some(QuietHours::parse("22:00-08:00").expect("window")),
            ..Schedule::default()
        };
        // 15:30 UTC is 23:30 in Shanghai (UTC+8): quiet, and already the next day there.
        let now = DateTime::parse_from_rfc3339("2026-12-02T15:30:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert!(schedule.is_quiet(now));
        assert_eq!(
            schedule.day(now),
            NaiveDate::from_ymd_opt(2026, 12, 2).expect("date")
        );
        let later = now + chrono::TimeDelta::hours(1);
        assert_eq!(
            schedule.day(later),
            NaiveDate::from_ymd_opt(2026, 12, 3).expect("date")
        );
        let noon = DateTime::parse_from_rfc3339("2026-12-02T04:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert!(!schedule.is_quiet(noon));
        assert!(!Schedule::default().is_quiet(now));
    }
}
