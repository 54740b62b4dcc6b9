//! The OpenAPI document, derived from the registered handlers: `spec()` runs the same
//! `routes::configure` the server runs, so the document cannot drift from the routes.
use actix_web::App;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use crate::domain::TemplateValue;
use crate::error::ErrorBody;

/// Title, description, tags, shared schemas and the bearer scheme.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wxbind",
        // Stable on purpose: bumping the crate must not churn the committed spec.
        version = "1",
        description = "Bind website accounts to a WeChat Official Account and send them template \
messages.\n\nEvery error is `{\"error\":{\"code\":\"<snake_case>\",\"message\":\"...\"}}`; \
`code` is the stable part to branch on.",
    ),
    modifiers(&BearerAuth),
    // `TemplateValue` is named by `CreateMessageRequest.data`'s hand-written schema, which
    // the derive does not follow.
    components(schemas(ErrorBody, TemplateValue)),
    tags(
        (name = "auth", description = "Logging in"),
        (name = "account", description = "The logged-in user"),
        (name = "users", description = "Looking accounts up (admins)"),
        (name = "binding", description = "Binding a WeChat account (OAuth2)"),
        (name = "messages", description = "Template messages and their delivery"),
        (name = "templates", description = "The official account's templates and their keywords"),
        (name = "keys", description = "API keys for servers (admins)"),
        (name = "broadcasts", description = "One request, one message per recipient (admins and API keys)"),
        (name = "webhooks", description = "Signed callbacks when messages, bindings and followers change (admins)"),
        (name = "audit", description = "The audit log of admin and key actions (admins)"),
        (name = "wechat", description = "WeChat's server push (called by WeChat, not the SPA)"),
        (name = "ops", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The `access_token` from `POST /api/login`, or an API key (`wxk_…`, `POST /api/keys`).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::session::COOKIE_NAME,
                "HttpOnly refresh session set by `POST /api/login`.",
            ))),
        );
    }
}

/// The document of every registered route.
pub fn spec() -> OpenApiDoc {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(crate::routes::configure)
        .split_for_parts();
    camel_case_links(&mut doc);
    let description = doc.info.description.take().unwrap_or_default();
    doc.info.description = Some(format!(
        "{description}\n\n## Error codes\n\n{}",
        crate::error::catalogue_markdown()
    ));
    doc
}

/// utoipa 5 writes a link's `operationId` and `operationRef` in snake_case, and tools that
/// follow links (Schemathesis' stateful phase, code generators) read only OpenAPI's names.
/// Each is moved to the link's extensions under its right name, which serializes as written.
/// (`request_body` would need the same, but the extensions are a hash map: two keys there
/// would come out in any order, so links here carry none; a test says so.)
fn camel_case_links(doc: &mut OpenApiDoc) {
    use utoipa::openapi::{RefOr, extensions::Extensions};
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            for response in operation.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                for link in response.links.values_mut() {
                    let RefOr::T(link) = link else { continue };
                    let fields = link.extensions.get_or_insert_with(Extensions::default);
                    for (name, value) in [
                        ("operationRef", std::mem::take(&mut link.operation_ref)),
                        ("operationId", std::mem::take(&mut link.operation_id)),
                    ] {
                        if !value.is_empty() {
                            fields.insert(name.to_owned(), value.into());
                        }
                    }
                }
            }
        }
    }
}

/// The document as committed in `openapi/openapi.json`: pretty JSON and a final newline.
pub fn spec_json() -> String {
    let mut s = spec()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_have_openapis_field_names() {
        let spec: serde_json::Value = serde_json::from_str(&super::spec_json()).expect("JSON");
        let link =
            &spec["paths"]["/api/messages"]["post"]["responses"]["202"]["links"]["GetMessage"];
        assert_eq!(link["operationId"], "get_message", "{link}");
        assert_eq!(link["parameters"]["id"], "$response.body#/id", "{link}");
        let operations = spec["paths"].as_object().expect("paths").values();
        let responses = operations
            .flat_map(|item| item.as_object().expect("path item").values())
            .flat_map(|op| op["responses"].as_object().expect("responses").values());
        for links in responses.filter_map(|r| r.get("links")) {
            for link in links.as_object().expect("links").values() {
                for field in link.as_object().expect("link").keys() {
                    assert!(
                        [
                            "operationId",
                            "operationRef",
                            "parameters",
                            "description",
                            "server"
                        ]
                        .contains(&field.as_str()),
                        "a link's {field:?} is not an OpenAPI name (or not supported): {link}"
                    );
                }
            }
        }
    }

    #[test]
    fn committed_spec_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
        let current = super::spec_json();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &current).expect("writing openapi/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == current,
            "openapi/openapi.json is out of date with the code. Regenerate it with:\n  \
             UPDATE_OPENAPI=1 cargo test -p wxbind openapi\nor\n  cargo run -q -p wxbind -- openapi > openapi/openapi.json"
        );
    }
}
