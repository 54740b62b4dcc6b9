//! What a template message is made of: the template id, its data and its link.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::DomainError;

/// A template id as the official account's backend shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId(String);

impl TemplateId {
    /// Validates a template id: 1–128 letters, digits, `_` or `-`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if raw.is_empty() || raw.len() > 128 || !raw.chars().all(ok) {
            return Err(DomainError(
                "template_id must be 1-128 letters, digits, '_' or '-'".into(),
            ));
        }
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for TemplateId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// One field of a template message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateValue {
    /// The text shown for this field: at most 1000 characters, none of them U+0000.
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    pub value: String,
    /// Accepted and ignored: WeChat has not shown custom colours since May 2023, so a
    /// `#RRGGBB` given here is checked for its shape, then neither stored nor sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "#173177", pattern = "^#[0-9A-Fa-f]{6}$")]
    pub color: Option<String>,
}

/// The `data` of a template message: field name → value, as WeChat expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateData(BTreeMap<String, TemplateValue>);

const MAX_FIELDS: usize = 32;
const MAX_VALUE_CHARS: usize = 1000;

impl TemplateData {
    /// Validates the fields: at least one, names like `keyword1`, values not too long. Colours
    /// are dropped: WeChat ignores them.
    pub fn parse(raw: BTreeMap<String, TemplateValue>) -> Result<Self, DomainError> {
        if raw.is_empty() {
            return Err(DomainError("data must have at least one field".into()));
        }
        if raw.len() > MAX_FIELDS {
            return Err(DomainError(format!(
                "data has more than {MAX_FIELDS} fields"
            )));
        }
        for (key, v) in &raw {
            let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
            if key.is_empty() || key.len() > 32 || !key.chars().all(ok) {
                return Err(DomainError(format!(
                    "data field name {key:?} must be 1-32 letters, digits or '_'"
                )));
            }
            if v.value.chars().count() > MAX_VALUE_CHARS {
                return Err(DomainError(format!(
                    "data.{key}.value is longer than {MAX_VALUE_CHARS} characters"
                )));
            }
            // PostgreSQL cannot store U+0000 in text or jsonb: such a row would fail the whole
            // batch it was written with.
            if v.value.contains('\0') {
                return Err(DomainError(format!(
                    "data.{key}.value must not contain U+0000"
                )));
            }
            if let Some(color) = &v.color {
                let hex = color.strip_prefix('#').unwrap_or("");
                if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(DomainError(format!(
                        "data.{key}.color must look like #173177"
                    )));
                }
            }
        }
        let without_colours = raw
            .into_iter()
            .map(|(key, v)| {
                let value = TemplateValue {
                    value: v.value,
                    color: None,
                };
                (key, value)
            })
            .collect();
        Ok(Self(without_colours))
    }

    /// Each field's key and value, by key.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.value.as_str()))
    }

    /// The JSON stored and sent to WeChat.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// The page a template message opens: an absolute http(s) URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageUrl {
    raw: String,
    host: String,
    port: Option<u16>,
}

impl MessageUrl {
    /// Validates a link. No credentials, spaces or control characters: the host a check
    /// reads must be the host every client opens, and parsers disagree about such URLs.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let plain = !raw.chars().any(|c| c.is_whitespace() || c.is_control());
        match url::Url::parse(raw) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && raw.len() <= 1024
                    && plain
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                Ok(Self {
                    raw: raw.to_owned(),
                    // http(s) URLs always have one; lowercased by the parser.
                    host: u.host_str().unwrap_or_default().to_owned(),
                    port: u.port(),
                })
            }
            _ => Err(DomainError(
                "url must be an absolute http(s) URL of at most 1024 bytes, without credentials, spaces or control characters".into(),
            )),
        }
    }

    /// The port, when the link names one other than its scheme's default.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl MessageUrl {
    /// The host the link points at (lowercase; IPv6 in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl AsRef<str> for MessageUrl {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &str, color: Option<&str>) -> TemplateValue {
        TemplateValue {
            value: value.into(),
            color: color.map(Into::into),
        }
    }

    #[test]
    fn template_data_rules() {
        let ok = BTreeMap::from([("keyword1".to_owned(), field("hi", Some("#173177")))]);
        let parsed = TemplateData::parse(ok).expect("valid");
        assert_eq!(
            parsed.to_json(),
            serde_json::json!({"keyword1": {"value": "hi"}}),
            "the colour is dropped"
        );
        let cases: Vec<(&str, BTreeMap<String, TemplateValue>)> = vec![
            ("empty", BTreeMap::new()),
            (
                "bad key",
                BTreeMap::from([("a b".to_owned(), field("x", None))]),
            ),
            (
                "bad color",
                BTreeMap::from([("k".to_owned(), field("x", Some("red")))]),
            ),
            (
                "long value",
                BTreeMap::from([("k".to_owned(), field(&"x".repeat(1001), None))]),
            ),
            (
                "U+0000",
                BTreeMap::from([("k".to_owned(), field("a\0b", None))]),
            ),
        ];
        for (name, raw) in cases {
            assert!(
                TemplateData::parse(raw).is_err(),
                "{name} should be refused"
            );
        }
    }

    #[test]
    fn template_id_and_url_rules() {
        assert!(TemplateId::parse("ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY").is_ok());
        assert!(TemplateId::parse("").is_err());
        assert!(TemplateId::parse("a b").is_err());
        assert!(MessageUrl::parse("https://example.com/x?y=1").is_ok());
        assert!(MessageUrl::parse("javascript:alert(1)").is_err());
        assert!(MessageUrl::parse("/relative").is_err());
        for tricky in [
            "https://evil.example.net@app.example.com/",
            "https://user:pw@app.example.com/",
            "https://evil.example.net\u{0}@app.example.com/",
            "https://app.example.com/a b",
        ] {
            assert!(MessageUrl::parse(tricky).is_err(), "{tricky:?}");
        }
        let with_port = MessageUrl::parse("https://app.example.com:8444/x").expect("url");
        assert_eq!(
            (with_port.host(), with_port.port()),
            ("app.example.com", Some(8444))
        );
        let default_port = MessageUrl::parse("https://app.example.com:443/x").expect("url");
        assert_eq!(default_port.port(), None);
    }
}
