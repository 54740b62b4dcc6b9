//! Who may send what. A message that passed its shape checks must still pass these: a site
//! user writes in the official account's name, so without them any signed-in user could send
//! arbitrary text and links (phishing under the account's name). Admins are unrestricted.
use crate::auth::AuthUser;
use crate::domain::{MessageUrl, TemplateId};
use crate::error::ApiError;

/// What a non-admin sender is held to.
#[derive(Debug, Clone, Copy)]
pub struct SendRules<'a> {
    /// The only template a non-admin may use (`WECHAT_TEMPLATE_ID`).
    pub default_template: Option<&'a str>,
    /// Hosts a non-admin's `url` may point at (`WXBIND_URL_HOSTS`).
    pub url_hosts: &'a [String],
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
}

/// Refuses what the caller may not send, naming the field.
pub fn authorize(
    caller: &AuthUser,
    request: &SendRequest<'_>,
    rules: &SendRules<'_>,
) -> Result<(), ApiError> {
    if caller.is_admin() {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn user(role: Role) -> AuthUser {
        AuthUser { id: 7, role }
    }

    #[test]
    fn non_admins_send_only_the_default_template_to_themselves_with_allowed_links() {
        let hosts = vec!["app.example.com".to_owned()];
        let rules = SendRules {
            default_template: Some("DEFAULT"),
            url_hosts: &hosts,
        };
        let default = TemplateId::parse("DEFAULT").expect("id");
        let other = TemplateId::parse("OTHER").expect("id");
        let ours = MessageUrl::parse("https://APP.example.com/orders/1").expect("url");
        let theirs = MessageUrl::parse("https://evil.example.net/login").expect("url");
        let ask = |user_id, template_id, url| SendRequest {
            user_id,
            template_id,
            url,
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
