//! Validated values: each is parsed once at the edge and passed on as a proven type; and the
//! rules of template keywords, which the service and the sandbox share.
mod bind_state;
mod keywords;
mod message_status;
mod miniprogram;
mod password;
mod role;
mod template;
mod text_enum;
mod username;

pub use bind_state::BindState;
pub use keywords::{KeyProblem, Keyword, KeywordType, TemplateKind, TemplateShape};
pub use message_status::{Delivery, MessageStatus};
pub use miniprogram::{Miniprogram, is_wechat_appid};
pub use password::Password;
pub use role::Role;
pub use template::{MessageUrl, TemplateData, TemplateId, TemplateValue};
pub use username::{Username, public_uid};

use rand::Rng;
use rand::distr::Alphanumeric;

/// Why a raw value was refused; the message is written for the API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DomainError(pub String);

/// `len` random characters from `[A-Za-z0-9]`, from the OS-seeded CSPRNG.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
