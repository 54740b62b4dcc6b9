//! The OAuth2 authorize URL users open in WeChat.
use url::Url;

/// `{oauth_base}/connect/oauth2/authorize?appid&redirect_uri&response_type&scope&state&connect_redirect#wechat_redirect`,
/// parameters in exactly this order: WeChat refuses the page otherwise.
pub fn authorize_url(oauth_base: &Url, app_id: &str, redirect_uri: &str, state: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(redirect_uri.as_bytes()).collect();
    format!(
        "{}/connect/oauth2/authorize?appid={app_id}&redirect_uri={encoded}&response_type=code\
         &scope=snsapi_userinfo&state={state}&connect_redirect=1#wechat_redirect",
        oauth_base.as_str().trim_end_matches('/'),
    )
}

/// The QR code image of a ticket: `{mp_base}/cgi-bin/showqrcode?ticket=…`.
pub fn showqrcode_url(mp_base: &Url, ticket: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(ticket.as_bytes()).collect();
    format!(
        "{}/cgi-bin/showqrcode?ticket={encoded}",
        mp_base.as_str().trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_url() {
        let base = Url::parse("https://open.weixin.qq.com").expect("url");
        let got = authorize_url(
            &base,
            "wx520c15f417810387",
            "https://example.com/api/callback",
            "abc123",
        );
        assert_eq!(
            got,
            "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wx520c15f417810387\
             &redirect_uri=https%3A%2F%2Fexample.com%2Fapi%2Fcallback&response_type=code\
             &scope=snsapi_userinfo&state=abc123&connect_redirect=1#wechat_redirect"
        );
    }

    #[test]
    fn keeps_a_base_path() {
        let base = Url::parse("http://127.0.0.1:8080/sandbox/").expect("url");
        let got = authorize_url(&base, "wx1", "http://x/cb", "s");
        assert!(
            got.starts_with("http://127.0.0.1:8080/sandbox/connect/oauth2/authorize?appid=wx1&")
        );
    }
}
