//! The mini-program page a template message may open: WeChat opens it rather than the
//! message's `url` when both are given, so it is checked as carefully as the link.
use super::DomainError;

/// A page of a mini program bound to the official account: its appid and a page path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miniprogram {
    appid: String,
    pagepath: String,
}

/// Longest page path accepted, as for `url`.
const MAX_PAGEPATH_BYTES: usize = 1024;

impl Miniprogram {
    /// Validates the pair; the error names the field.
    pub fn parse(appid: &str, pagepath: &str) -> Result<Self, DomainError> {
        if !is_wechat_appid(appid) {
            return Err(DomainError(
                "miniprogram.appid must be wx and 16 letters or digits, like wx1234567890abcdef"
                    .into(),
            ));
        }
        if !is_page_path(pagepath) {
            return Err(DomainError(format!(
                "miniprogram.pagepath must be a page path with an optional query, like \
                 pages/order/detail?id=42: 1-{MAX_PAGEPATH_BYTES} bytes, no scheme, host, \
                 fragment, spaces or control characters"
            )));
        }
        Ok(Self {
            appid: appid.to_owned(),
            pagepath: pagepath.to_owned(),
        })
    }

    /// The mini program's appid.
    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// The page to open, with its query if any.
    pub fn pagepath(&self) -> &str {
        &self.pagepath
    }

    /// The JSON stored and sent to WeChat: `{"appid", "pagepath"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"appid": self.appid, "pagepath": self.pagepath})
    }
}

/// Whether `raw` has the shape of a WeChat appid: `wx` and 16 letters or digits.
pub fn is_wechat_appid(raw: &str) -> bool {
    raw.strip_prefix("wx")
        .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A path inside the mini program, never somewhere else: a scheme (`https:`, `javascript:`)
/// or a host (`//evil.example`) would make it a link, which is `url`'s job and rules.
fn is_page_path(raw: &str) -> bool {
    let path = raw.split_once('?').map_or(raw, |(path, _)| path);
    !path.is_empty()
        && raw.len() <= MAX_PAGEPATH_BYTES
        && !raw.chars().any(|c| c.is_control() || c.is_whitespace())
        && !raw.contains('#')
        && !path.starts_with("//")
        && !path.contains([':', '\\'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appids_look_like_wechats() {
        assert!(is_wechat_appid("wx1234567890abcdef"));
        assert!(is_wechat_appid("wxABCDEF1234567890"));
        for bad in [
            "",
            "wx",
            "wx1234567890abcde",
            "wx1234567890abcdef0",
            "xw1234567890abcdef",
            "wx1234567890abcde-",
            "wx1234567890abcdé",
        ] {
            assert!(!is_wechat_appid(bad), "{bad:?}");
        }
    }

    #[test]
    fn page_paths_stay_inside_the_mini_program() {
        for ok in [
            "pages/index/index",
            "/pages/order/detail?id=42&from=wx",
            "pages/a?next=https://example.com",
        ] {
            assert!(
                Miniprogram::parse("wx1234567890abcdef", ok).is_ok(),
                "{ok:?}"
            );
        }
        let long = format!("pages/{}", "x".repeat(1020));
        for bad in [
            "",
            "?id=1",
            "https://example.com/x",
            "javascript:alert(1)",
            "//evil.example/pages",
            "pages\\..\\x",
            "pages/a b",
            "pages/a\n",
            "pages/a#top",
            long.as_str(),
        ] {
            let err = Miniprogram::parse("wx1234567890abcdef", bad).expect_err(bad);
            assert!(err.0.starts_with("miniprogram.pagepath"), "{bad:?}: {err}");
        }
        let err = Miniprogram::parse("wxnope", "pages/index").expect_err("appid");
        assert!(err.0.starts_with("miniprogram.appid"), "{err}");
    }
}
