//! WeChat's server-push XML: parsing the flat `<xml>` envelope (refusing DTDs and entities),
//! the events this service acts on, and passive replies.
use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event as XmlEvent;

use crate::domain::Delivery;

/// Largest push body accepted; real ones are well under 4 KiB.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

/// Why a push body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed push XML: {0}")]
pub struct XmlError(pub String);

/// The top-level elements of `<xml>…</xml>`, by name (nested elements are skipped).
pub fn parse_fields(xml: &str) -> Result<BTreeMap<String, String>, XmlError> {
    let mut reader = Reader::from_str(xml);
    let mut fields = BTreeMap::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut saw_root = false;
    loop {
        match reader.read_event() {
            // No DTDs: they are how XML external entities (XXE) get in.
            Ok(XmlEvent::DocType(_)) => return Err(XmlError("DOCTYPE is not allowed".into())),
            Ok(XmlEvent::Start(e)) => {
                depth += 1;
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                match depth {
                    1 if name == "xml" => saw_root = true,
                    1 => return Err(XmlError(format!("root element is <{name}>, not <xml>"))),
                    2 => current = Some(name),
                    _ => {}
                }
            }
            Ok(XmlEvent::Empty(e)) if depth == 1 => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                fields.insert(name, String::new());
            }
            Ok(XmlEvent::End(_)) => {
                if depth == 2 {
                    current = None;
                }
                depth = depth.saturating_sub(1);
            }
            Ok(XmlEvent::Text(t)) if depth == 2 => {
                let text = t
                    .unescape()
                    .map_err(|e| XmlError(format!("bad text: {e}")))?;
                if let Some(name) = &current {
                    fields.entry(name.clone()).or_default().push_str(&text);
                }
            }
            Ok(XmlEvent::CData(c)) if depth == 2 => {
                let text =
                    std::str::from_utf8(&c).map_err(|_| XmlError("CDATA is not UTF-8".into()))?;
                if let Some(name) = &current {
                    fields.entry(name.clone()).or_default().push_str(text);
                }
            }
            Ok(XmlEvent::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(XmlError(e.to_string())),
        }
    }
    if !saw_root || depth != 0 {
        return Err(XmlError("expected one complete <xml> element".into()));
    }
    // XML has no U+0000 (not even as `&#0;`), and PostgreSQL could not store one.
    if fields.values().any(|v| v.contains('\0')) {
        return Err(XmlError("U+0000 is not allowed".into()));
    }
    Ok(fields)
}

/// A push this service understands.
#[derive(Clone, PartialEq, Eq)]
pub struct Push {
    /// The sender's openid (`FromUserName`).
    pub from: String,
    /// The official account (`ToUserName`).
    pub to: String,
    /// `CreateTime`, seconds since the epoch.
    pub create_time: i64,
    /// `MsgType`: `event`, `text`, ….
    pub msg_type: String,
    /// `Event`, for events.
    pub event: Option<String>,
    /// `EventKey`, when present.
    pub event_key: Option<String>,
    /// `MsgId` (messages) or `MsgID` (TEMPLATESENDJOBFINISH).
    pub msg_id: Option<String>,
    /// `Status` of TEMPLATESENDJOBFINISH.
    pub status: Option<String>,
    /// All top-level fields, as received.
    pub fields: BTreeMap<String, String>,
}
// A scan's key is `bind_<state>`, a secret until the push has consumed it; `fields` holds it too.
crate::telemetry::redacted_debug!(Push {
    from,
    to,
    create_time,
    msg_type,
    event,
    event_key: redacted,
    msg_id,
    status,
    fields: redacted
});

impl Push {
    /// Validates the fields every push carries.
    pub fn from_fields(fields: BTreeMap<String, String>) -> Result<Self, XmlError> {
        let get = |k: &str| {
            fields
                .get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let from = get("FromUserName").ok_or_else(|| XmlError("FromUserName missing".into()))?;
        let to = get("ToUserName").ok_or_else(|| XmlError("ToUserName missing".into()))?;
        let create_time = get("CreateTime")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| XmlError("CreateTime missing or not a number".into()))?;
        let msg_type = get("MsgType").ok_or_else(|| XmlError("MsgType missing".into()))?;
        if from.len() > 128 || to.len() > 128 {
            return Err(XmlError("user names are too long".into()));
        }
        Ok(Self {
            from,
            to,
            create_time,
            msg_type,
            event: get("Event"),
            event_key: get("EventKey"),
            msg_id: get("MsgId").or_else(|| get("MsgID")),
            status: get("Status"),
            fields,
        })
    }

    /// The key under which a retried push is recognised: the message id, or sender, time,
    /// event and key for events (which have none).
    pub fn dedup_key(&self) -> String {
        match &self.msg_id {
            Some(id) => format!("msg:{id}"),
            None => format!(
                "event:{}:{}:{}:{}",
                self.from,
                self.create_time,
                self.event.as_deref().unwrap_or_default(),
                self.event_key.as_deref().unwrap_or_default()
            ),
        }
    }

    /// What this push means to the service.
    pub fn kind(&self) -> PushKind {
        let event = self.event.as_deref().map(str::to_ascii_lowercase);
        match (self.msg_type.as_str(), event.as_deref()) {
            ("event", Some("subscribe")) => PushKind::Subscribe {
                scene: self
                    .event_key
                    .as_deref()
                    .and_then(|k| k.strip_prefix("qrscene_"))
                    .map(str::to_owned),
            },
            ("event", Some("unsubscribe")) => PushKind::Unsubscribe,
            ("event", Some("scan")) => PushKind::Scan {
                scene: self.event_key.clone().unwrap_or_default(),
            },
            ("event", Some("templatesendjobfinish")) => PushKind::TemplateReport {
                msgid: self.msg_id.as_deref().and_then(|m| m.parse().ok()),
                delivery: Delivery::from_status(self.status.as_deref().unwrap_or_default()),
            },
            _ => PushKind::Other,
        }
    }
}

/// What a push asks of the service. `Debug` hides the scenes, which carry bind states.
#[derive(Clone, PartialEq, Eq)]
pub enum PushKind {
    /// The user followed; with a scene when they followed by scanning a parametric QR code.
    Subscribe {
        /// The QR code's scene, without `qrscene_`.
        scene: Option<String>,
    },
    /// The user unfollowed.
    Unsubscribe,
    /// A follower scanned a parametric QR code.
    Scan {
        /// The QR code's scene.
        scene: String,
    },
    /// WeChat's report on a template message.
    TemplateReport {
        /// The message's msgid.
        msgid: Option<i64>,
        /// What happened to it.
        delivery: Delivery,
    },
    /// Anything else: recorded, not acted on.
    Other,
}

impl std::fmt::Debug for PushKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::telemetry::Redacted;
        match self {
            Self::Subscribe { scene } => f
                .debug_struct("Subscribe")
                .field("scene", &Redacted(scene))
                .finish(),
            Self::Unsubscribe => f.write_str("Unsubscribe"),
            Self::Scan { scene } => f
                .debug_struct("Scan")
                .field("scene", &Redacted(scene))
                .finish(),
            Self::TemplateReport { msgid, delivery } => f
                .debug_struct("TemplateReport")
                .field("msgid", msgid)
                .field("delivery", delivery)
                .finish(),
            Self::Other => f.write_str("Other"),
        }
    }
}

// The stored values are the domain's; how WeChat spells them is this module's business.
impl Delivery {
    /// Reads `Status`: `success`, or a `failed` prefix (WeChat's spacing varies).
    pub fn from_status(status: &str) -> Self {
        let s = status.trim().to_ascii_lowercase();
        if s == "success" {
            Self::Delivered
        } else if s.starts_with("failed") && s.contains("block") {
            Self::Blocked
        } else {
            Self::Failed
        }
    }
}

/// Wraps text in CDATA, splitting any `]]>` so the text cannot end the section.
pub fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// A passive text reply to `push`.
pub fn text_reply(push: &Push, text: &str, now: i64) -> String {
    format!(
        "<xml><ToUserName>{}</ToUserName><FromUserName>{}</FromUserName><CreateTime>{now}</CreateTime>\
         <MsgType><![CDATA[text]]></MsgType><Content>{}</Content></xml>",
        cdata(&push.from),
        cdata(&push.to),
        cdata(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(xml: &str) -> Push {
        Push::from_fields(parse_fields(xml).expect("parses")).expect("valid")
    }

    // Shapes as WeChat's documentation shows them.
    const SUBSCRIBE: &str = "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>";
    const SUBSCRIBE_QR: &str = "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[qrscene_123123]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>";
    const SCAN: &str = "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[SCAN]]></Event><EventKey><![CDATA[SCENE_VALUE]]></EventKey><Ticket><![CDATA[TICKET]]></Ticket></xml>";
    const JOB_FINISH: &str = "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName><CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID><Status><![CDATA[success]]></Status></xml>";

    #[test]
    fn parses_every_event_kind() {
        assert_eq!(push(SUBSCRIBE).kind(), PushKind::Subscribe { scene: None });
        assert_eq!(
            push(SUBSCRIBE_QR).kind(),
            PushKind::Subscribe {
                scene: Some("123123".into())
            }
        );
        assert_eq!(
            push(SCAN).kind(),
            PushKind::Scan {
                scene: "SCENE_VALUE".into()
            }
        );
        assert_eq!(
            push(JOB_FINISH).kind(),
            PushKind::TemplateReport {
                msgid: Some(200_163_836),
                delivery: Delivery::Delivered
            }
        );
        let unsub = SUBSCRIBE.replace("[subscribe]", "[unsubscribe]");
        assert_eq!(push(&unsub).kind(), PushKind::Unsubscribe);
    }

    #[test]
    fn delivery_status_matches_the_failed_prefix() {
        assert_eq!(Delivery::from_status("success"), Delivery::Delivered);
        assert_eq!(
            Delivery::from_status("failed:user block"),
            Delivery::Blocked
        );
        assert_eq!(
            Delivery::from_status("failed: system failed"),
            Delivery::Failed
        );
        assert_eq!(Delivery::from_status("failed:whatever"), Delivery::Failed);
    }

    #[test]
    fn dedup_keys_use_msgid_or_the_event_tuple() {
        assert_eq!(push(JOB_FINISH).dedup_key(), "msg:200163836");
        assert_eq!(
            push(SCAN).dedup_key(),
            "event:FromUser:123456789:SCAN:SCENE_VALUE"
        );
    }

    #[test]
    fn refuses_doctype_entities_and_junk() {
        let xxe = "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><xml><ToUserName>&xxe;</ToUserName></xml>";
        assert!(parse_fields(xxe).is_err());
        assert!(parse_fields("<xml><ToUserName>&unknown;</ToUserName></xml>").is_err());
        assert!(parse_fields("<notxml/>").is_err());
        assert!(parse_fields("<xml><a>unclosed</xml>").is_err());
        assert!(parse_fields("").is_err());
        // No U+0000, raw or as a character reference: PostgreSQL could not record it.
        assert!(parse_fields("<xml><FromUserName><![CDATA[o\0x]]></FromUserName></xml>").is_err());
        assert!(parse_fields("<xml><FromUserName>o&#0;x</FromUserName></xml>").is_err());
        assert!(
            Push::from_fields(
                parse_fields("<xml><ToUserName>x</ToUserName></xml>").expect("parses")
            )
            .is_err()
        );
    }

    #[test]
    fn replies_escape_cdata_terminators() {
        let p = push(SUBSCRIBE);
        let reply = text_reply(&p, "a]]>b", 1);
        assert!(reply.contains("<ToUserName><![CDATA[FromUser]]></ToUserName>"));
        let fields = parse_fields(&reply).expect("reply parses");
        assert_eq!(fields["Content"], "a]]>b");
    }
}
