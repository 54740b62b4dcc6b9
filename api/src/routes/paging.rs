//! Cursor pages, as every list route serves them: `limit` 1-200 (50 when omitted), an opaque
//! `cursor` taken from the previous page's `next_cursor`, and one row more fetched than shown
//! to know whether a next page exists.
use base64::Engine;

use crate::error::ApiError;

/// Rows per page when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The page size asked for, checked.
pub fn limit(raw: Option<i64>) -> Result<i64, ApiError> {
    let limit = raw.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid("limit must be 1 to 200"))
    }
}

/// The position a `cursor` stands for, read by `decode`; 400 for one this server did not give.
pub fn cursor<T>(
    raw: Option<&str>,
    decode: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    raw.map(|c| decode(c).ok_or_else(|| ApiError::invalid("cursor is not one this server gave")))
        .transpose()
}

/// Keeps the first `limit` of `rows` (fetched with `limit + 1`) and, when there were more, the
/// cursor of the last one kept.
pub fn split<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl FnOnce(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = more.then(|| rows.last().map(cursor_of)).flatten();
    (rows, next)
}

/// `text` as an opaque cursor (base64url).
pub fn seal(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// The text of a cursor made by [`seal`].
pub fn unseal(raw: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_pages_and_cursors() {
        assert_eq!(limit(None).ok(), Some(50));
        assert_eq!(limit(Some(200)).ok(), Some(200));
        assert!(limit(Some(0)).is_err() && limit(Some(201)).is_err());
        let (rows, next) = split(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((rows, next.as_deref()), (vec![1, 2], Some("2")));
        let (rows, next) = split(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((rows, next), (vec![1, 2], None));
        assert_eq!(unseal(&seal("a.42")).as_deref(), Some("a.42"));
        assert!(cursor(Some("x"), |_| None::<i64>).is_err());
        assert_eq!(cursor(None, |_| Some(1)).ok(), Some(None));
    }
}
