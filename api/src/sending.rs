//! Who may send what. A message that passed its shape checks must still pass these: a site
//! user writes in the official account's name, so without them any signed-in user could send
//! arbitrary text and links (phishing under the account's name). Admins are unrestricted.
use crate::auth::AuthUser;
use crate::domain::{MessageUrl, Miniprogram, TemplateId};
use crate::error::ApiError;

/// What a non-admin sender is held to.
#[derive(Debug, Clone, Copy)]
pub struct SendRules<'a> {
    /// The only template a non-admin may use (`WECHAT_TEMPLATE_ID`).
    pub default_template: Option<&'a str>,
    /// Hosts a non-admin's `url` may point at (`WXBIND_URL_HOSTS`).
    pub url_hosts: &'a [String],
    /// Mini programs a non-admin's message may open (`WXBIND_MINIPROGRAM_APPIDS`).
    pub miniprogram_appids: &'a [String],
}

/// What a request asks to send.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    /// The recipient.
    pub user_id: i64,
    /// The template.
    pub template_id: &'a TemplateId,
    /// The link, if any.
    pub url: Option<&'a MessageUrl>,
    /// The mini-program page, if any.
    pub miniprogram: Option<&'a Miniprogram>,
}

/// What every way of sending (one message, a broadcast) names besides its recipients and
/// data, checked for shape.
#[derive(Debug, Clone)]
pub struct Content {
    /// The template (the server's default when none was named).
    pub template_id: TemplateId,
    /// The link, if any.
    pub url: Option<MessageUrl>,
    /// The mini-program page, if any.
    pub miniprogram: Option<Miniprogram>,
}

impl Content {
    /// Checks a request's template, link and mini-program page (`(appid, pagepath)`).
    pub fn parse(
        template_id: Option<&str>,
        default_template: Option<&str>,
        url: Option<&str>,
        miniprogram: Option<(&str, &str)>,
    ) -> Result<Self, ApiError> {
        let bad = |e: crate::domain::DomainError| ApiError::InvalidRequest(e.0);
        let template_id = match template_id.or(default_template) {
            Some(t) => TemplateId::parse(t).map_err(bad)?,
            None => {
                return Err(ApiError::invalid(
                    "template_id is required: none given and the server has no WECHAT_TEMPLATE_ID",
                ));
            }
        };
        Ok(Self {
            template_id,
            url: url.map(MessageUrl::parse).transpose().map_err(bad)?,
            miniprogram: miniprogram
                .map(|(appid, pagepath)| Miniprogram::parse(appid, pagepath))
                .transpose()
                .map_err(bad)?,
        })
    }
}

/// Checks an idempotency key: 1-128 printable ASCII characters, no spaces.
pub fn check_idempotency_key(key: Option<&str>) -> Result<(), ApiError> {
    match key {
        Some(k) if k.is_empty() || k.len() > 128 || !k.chars().all(|c| c.is_ascii_graphic()) => {
            Err(ApiError::invalid(
                "idempotency_key must be 1-128 printable ASCII characters",
            ))
        }
        _ => Ok(()),
    }
}

/// How far ahead `send_at` may be.
pub const MAX_SCHEDULE_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// Checks `send_at` (at most [`MAX_SCHEDULE_AHEAD`] from now) and `urgent` (admins and keys).
pub fn check_timing(
    caller: &AuthUser,
    send_at: Option<chrono::DateTime<chrono::Utc>>,
    urgent: bool,
) -> Result<(), ApiError> {
    if send_at.is_some_and(|at| at > chrono::Utc::now() + MAX_SCHEDULE_AHEAD) {
        return Err(ApiError::invalid("send_at must be at most 30 days ahead"));
    }
    if urgent && !(caller.is_admin() || caller.key.is_some()) {
        return Err(ApiError::Forbidden(
            "urgent: only admins and API keys may send during quiet hours",
        ));
    }
    Ok(())
}

/// Refuses what the caller may not send, naming the field.
pub fn authorize(
    caller: &AuthUser,
    request: &SendRequest<'_>,
    rules: &SendRules<'_>,
) -> Result<(), ApiError> {
    if caller.may_send_to_anyone() {
        return Ok(());
    }
    if request.user_id != caller.id {
        return Err(ApiError::Forbidden(
            "user_id: only admins may send messages to other users",
        ));
    }
    if rules.default_template != Some(request.template_id.as_ref()) {
        return Err(ApiError::Forbidden(
            "template_id: only admins may choose a template other than the default",
        ));
    }
    if let Some(url) = request.url {
        if !rules
            .url_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(url.host()))
        {
            return Err(ApiError::Forbidden(
                "url: only admins may link to hosts outside WXBIND_URL_HOSTS",
            ));
        }
    }
    // WeChat opens the mini program instead of the url, so it is the link that counts; the url
    // stays held to its rules above, since older WeChat clients open it instead.
    if let Some(page) = request.miniprogram {
        if !rules.miniprogram_appids.iter().any(|a| a == page.appid()) {
            return Err(ApiError::Forbidden(
                "miniprogram.appid: only admins may open mini programs outside WXBIND_MINIPROGRAM_APPIDS",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn user(role: Role) -> AuthUser {
        AuthUser {
            id: 7,
            role,
            key: None,
        }
    }

    #[test]
    fn non_admins_send_only_the_default_template_to_themselves_with_allowed_links() {
        let hosts = vec!["app.example.com".to_owned()];
        let appids = vec!["wx1234567890abcdef".to_owned()];
        let rules = SendRules {
            default_template: Some("DEFAULT"),
            url_hosts: &hosts,
            miniprogram_appids: &appids,
        };
        let default = TemplateId::parse("DEFAULT").expect("id");
        let other = TemplateId::parse("OTHER").expect("id");
        let ours = MessageUrl::parse("https://APP.example.com/orders/1").expect("url");
        let theirs = MessageUrl::parse("https://evil.example.net/login").expect("url");
        let listed = Miniprogram::parse("wx1234567890abcdef", "pages/index").expect("page");
        let unlisted = Miniprogram::parse("wxfedcba0987654321", "pages/index").expect("page");
        let ask = |user_id, template_id, url| SendRequest {
            user_id,
            template_id,
            url,
            miniprogram: None,
        };
        let page = |url, miniprogram| SendRequest {
            miniprogram: Some(miniprogram),
            ..ask(7, &default, url)
        };
        let cases = [
            ("self, default, no url", ask(7, &default, None), true),
            (
                "self, default, our host",
                ask(7, &default, Some(&ours)),
                true,
            ),
            ("another user", ask(8, &default, None), false),
            ("another template", ask(7, &other, None), false),
            ("a foreign host", ask(7, &default, Some(&theirs)), false),
            ("a listed mini program", page(None, &listed), true),
            ("an unlisted mini program", page(None, &unlisted), false),
            (
                "a listed mini program, our host",
                page(Some(&ours), &listed),
                true,
            ),
            (
                "a listed mini program, a foreign host",
                page(Some(&theirs), &listed),
                false,
            ),
        ];
        for (case, request, allowed) in cases {
            assert_eq!(
                authorize(&user(Role::User), &request, &rules).is_ok(),
                allowed,
                "{case}"
            );
            assert!(
                authorize(&user(Role::Admin), &request, &rules).is_ok(),
                "admin: {case}"
            );
        }
    }
}
