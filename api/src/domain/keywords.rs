//! A template's keywords, read from its `content`, and the rules WeChat holds their values to.
//! One implementation serves the service (which refuses a message that breaks them before it
//! is queued) and the sandbox (which answers 47003 for it, as WeChat does), so what passes one
//! passes the other.
//!
//! Category templates, the only kind WeChat creates since 2023, name each keyword by its type
//! and a number (`thing1`, `time2`, …) and WeChat checks every value against that type. Old
//! industry-library templates use free keys (`keyword1`, `first`, …) with a length limit only.
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a keyword's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeywordType {
    /// Up to 20 characters: Chinese, letters, digits or symbols.
    Thing,
    /// Up to 32 digits, with an optional decimal part.
    Number,
    /// Up to 32 letters.
    Letter,
    /// Up to 5 symbols.
    Symbol,
    /// Up to 32 digits, letters or symbols.
    CharacterString,
    /// A 24-hour time, optionally after a date; or two joined by `~`.
    Time,
    /// A date, optionally with a time; or two joined by `~`.
    Date,
    /// A currency symbol, up to 10 digits with optional decimals, optionally `元`.
    Amount,
    /// Up to 17 digits and symbols.
    PhoneNumber,
    /// A licence plate: up to 8 letters or digits; the first and last may be Chinese.
    CarNumber,
    /// Up to 10 Chinese characters, or up to 20 letters or symbols.
    Name,
    /// Up to 5 Chinese characters.
    Phrase,
    /// Fixed by the template: the sender cannot set it.
    Const,
    /// A free key of an old industry-library template: any text up to 200 characters.
    Legacy,
}

/// The typed keywords, by the prefix of their key. A key's prefix is compared whole (`thing1`
/// → `thing`), never as a substring, so `name` cannot claim `phone_number1`.
const TYPED: [(&str, KeywordType); 13] = [
    ("thing", KeywordType::Thing),
    ("number", KeywordType::Number),
    ("letter", KeywordType::Letter),
    ("symbol", KeywordType::Symbol),
    ("character_string", KeywordType::CharacterString),
    ("time", KeywordType::Time),
    ("date", KeywordType::Date),
    ("amount", KeywordType::Amount),
    ("phone_number", KeywordType::PhoneNumber),
    ("car_number", KeywordType::CarNumber),
    ("name", KeywordType::Name),
    ("phrase", KeywordType::Phrase),
    ("const", KeywordType::Const),
];

/// Longest value of a legacy key: WeChat states no per-key rule for them, only an overall
/// limit, so this is the one the service and the sandbox share.
pub const LEGACY_MAX_CHARS: usize = 200;

impl KeywordType {
    /// The type a category template's key names (`thing1` → thing), if it is one.
    fn of_key(key: &str) -> Option<Self> {
        let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
        if prefix.len() == key.len() {
            return None;
        }
        TYPED.iter().find(|(p, _)| *p == prefix).map(|(_, t)| *t)
    }

    /// The name WeChat uses for the type (also its JSON value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            typed => TYPED
                .iter()
                .find(|(_, t)| *t == typed)
                .map_or("legacy", |(p, _)| p),
        }
    }

    /// The rule a value of this type must follow, as the API states it.
    pub fn rule(self) -> &'static str {
        match self {
            Self::Thing => "up to 20 characters: Chinese, letters, digits or symbols",
            Self::Number => "up to 32 digits, with an optional decimal part",
            Self::Letter => "up to 32 letters",
            Self::Symbol => "up to 5 symbols",
            Self::CharacterString => "up to 32 digits, letters or symbols",
            Self::Time => {
                "a 24-hour time, optionally after a date (15:01, 2019年10月1日 15:01), or two joined by ~"
            }
            Self::Date => {
                "a date (2019年10月1日, 2019-10-01, 2019/10/01, 2019.10.01, 2019-10, 10-01), optionally with a time, or two joined by ~"
            }
            Self::Amount => {
                "one currency symbol, then up to 10 digits with optional decimals, optionally ending in 元 (¥8.80元)"
            }
            Self::PhoneNumber => "up to 17 digits and symbols (+86-0766-66888866)",
            Self::CarNumber => {
                "up to 8 letters or digits; the first and last may be Chinese (粤A8Z888挂)"
            }
            Self::Name => "up to 10 Chinese characters, or up to 20 letters or symbols",
            Self::Phrase => "up to 5 Chinese characters (配送中)",
            Self::Const => "fixed by the template: the sender cannot set it",
            Self::Legacy => "up to 200 characters",
        }
    }

    /// Whether `value` follows [`rule`](Self::rule). A `const` value never does: it is not the
    /// sender's to give.
    pub fn accepts(self, value: &str) -> bool {
        let n = value.chars().count();
        if self == Self::Legacy {
            return n <= LEGACY_MAX_CHARS;
        }
        // Every typed value has content, and none may carry control characters or line breaks
        // (WeChat shows each keyword on one line).
        if n == 0 || value.chars().any(is_control) {
            return false;
        }
        let all = |f: fn(char) -> bool| value.chars().all(f);
        match self {
            Self::Thing => n <= 20,
            Self::Number => n <= 32 && is_decimal(value),
            Self::Letter => n <= 32 && all(is_letter),
            Self::Symbol => n <= 5 && all(is_symbol),
            Self::CharacterString => n <= 32 && all(|c| !is_chinese(c)),
            Self::Time => is_range(value, |s| date_and_time(s, false)),
            Self::Date => is_range(value, |s| date_and_time(s, true)),
            Self::Amount => is_amount(value),
            Self::PhoneNumber => n <= 17 && all(|c| c.is_ascii_digit() || is_symbol(c)),
            Self::CarNumber => is_car_number(value),
            Self::Name => {
                (n <= 10 && all(is_chinese))
                    || (n <= 20 && all(|c| !is_chinese(c) && !c.is_ascii_digit()))
            }
            Self::Phrase => n <= 5 && all(is_chinese),
            Self::Const | Self::Legacy => false,
        }
    }
}

/// Whether a template is a category template (typed keys) or an old industry-library one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// From the category template library: every key is typed (`thing1`, `time2`, …).
    Category,
    /// From the old industry library: free keys (`keyword1`, `first`, …), no per-type rule.
    Legacy,
}

/// One keyword of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Keyword {
    /// The key of `data` it takes, e.g. `thing1`.
    #[schema(example = "thing1")]
    pub key: String,
    /// What its value must look like; `legacy` for every key of a legacy template.
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub kind: KeywordType,
    /// The label the template shows before it (`商品名称：{{thing1.DATA}}`), if any.
    #[schema(example = "商品名称")]
    pub label: Option<String>,
}

/// What a template takes, as its `content` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateShape {
    /// Category or legacy.
    pub kind: TemplateKind,
    /// Its keywords, in the order of the content, each once.
    pub keywords: Vec<Keyword>,
}

/// Keys WeChat stopped showing in May 2023. Category templates never have them; a legacy
/// template may still list them, and a send carrying them succeeds with them dropped.
const DROPPED_KEYS: [&str; 2] = ["first", "remark"];

/// One thing wrong with a message's `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyProblem {
    /// The key of `data` concerned.
    #[schema(example = "thing1")]
    pub key: String,
    /// What is wrong with it.
    #[schema(
        example = "not a valid thing: up to 20 characters: Chinese, letters, digits or symbols"
    )]
    pub problem: String,
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "data.{}: {}", self.key, self.problem)
    }
}

impl TemplateShape {
    /// Reads the keywords of a template's `content`: each `{{key.DATA}}` placeholder, labelled
    /// by the text before it on its line when that ends in a colon (`：` or `:`). A key that
    /// appears twice is listed once.
    pub fn parse(content: &str) -> Self {
        let mut keywords: Vec<Keyword> = Vec::new();
        for line in content.lines() {
            let mut rest = line;
            while let Some((before, key, after)) = next_placeholder(rest) {
                let label = label_of(before);
                match keywords.iter_mut().find(|k| k.key == key) {
                    // A repeat only fills in a label the first occurrence lacked.
                    Some(seen) => {
                        if seen.label.is_none() {
                            seen.label = label;
                        }
                    }
                    None => keywords.push(Keyword {
                        key: key.to_owned(),
                        kind: KeywordType::of_key(key).unwrap_or(KeywordType::Legacy),
                        label,
                    }),
                }
                rest = after;
            }
        }
        let category = !keywords.is_empty()
            && keywords
                .iter()
                .all(|k| KeywordType::of_key(&k.key).is_some());
        if !category {
            // A free key among typed-looking ones makes an old template: WeChat applies no
            // per-type rule to any of its keys.
            for k in &mut keywords {
                k.kind = KeywordType::Legacy;
            }
        }
        Self {
            kind: if category {
                TemplateKind::Category
            } else {
                TemplateKind::Legacy
            },
            keywords,
        }
    }

    /// The keyword with `key`, if the template has it.
    pub fn keyword(&self, key: &str) -> Option<&Keyword> {
        self.keywords.iter().find(|k| k.key == key)
    }

    /// Whether `key` is one WeChat has dropped and this template does not list, so a sender
    /// of it can be told why rather than just "unknown".
    pub fn is_dropped_key(&self, key: &str) -> bool {
        DROPPED_KEYS.contains(&key) && self.keyword(key).is_none()
    }

    /// Every problem of `data` (key → value) for this template, in the template's order and
    /// then the unknown keys: a key it does not have, a `const` key, a value its type refuses,
    /// and, for a category template, a keyword left out. A legacy template's keywords may be
    /// left out: WeChat shows them empty, and its `first` and `remark` not at all.
    pub fn check<'a>(&self, data: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<KeyProblem> {
        let data: Vec<(&str, &str)> = data.into_iter().collect();
        let value_of = |key: &str| data.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String| {
            problems.push(KeyProblem {
                key: key.to_owned(),
                problem: what,
            });
        };
        for k in &self.keywords {
            match (value_of(&k.key), k.kind) {
                (Some(_), KeywordType::Const) => problem(
                    &k.key,
                    "a const keyword is fixed by the template: leave it out".to_owned(),
                ),
                (Some(value), kind) if !kind.accepts(value) => problem(
                    &k.key,
                    format!("not a valid {}: {}", kind.as_str(), kind.rule()),
                ),
                (Some(_), _) | (None, KeywordType::Const | KeywordType::Legacy) => {}
                (None, kind) => problem(
                    &k.key,
                    match &k.label {
                        Some(label) => {
                            format!(
                                "missing: the template has it ({label}, type {})",
                                kind.as_str()
                            )
                        }
                        None => format!("missing: the template has it (type {})", kind.as_str()),
                    },
                ),
            }
        }
        for (key, _) in &data {
            if self.keyword(key).is_some() {
                continue;
            }
            if self.is_dropped_key(key) {
                problem(
                    key,
                    "WeChat has not shown first and remark since May 2023, and this template has no such keyword: leave it out".to_owned(),
                );
            } else {
                let keys: Vec<&str> = self.keywords.iter().map(|k| k.key.as_str()).collect();
                problem(
                    key,
                    format!("not a keyword of the template (it has {})", keys.join(", ")),
                );
            }
        }
        problems
    }
}

/// The first `{{key.DATA}}` in `s`: the text before it, the key, and the text after it.
fn next_placeholder(s: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(open) = s[from..].find("{{").map(|i| from + i) {
        let inner = &s[open + 2..];
        if let Some(close) = inner.find("}}") {
            if let Some(key) = inner[..close].strip_suffix(".DATA") {
                let ok = |c: char| c.is_ascii_alphanumeric() || c == '_';
                if !key.is_empty() && key.chars().all(ok) {
                    return Some((&s[..open], key, &inner[close + 2..]));
                }
            }
        }
        // Not a placeholder (`{{` in the template's own text): look further on.
        from = open + 2;
    }
    None
}

/// The label in the text before a placeholder: what precedes a final `：` or `:`.
fn label_of(before: &str) -> Option<String> {
    let text = before.trim_end();
    let label = text.strip_suffix('：').or_else(|| text.strip_suffix(':'))?;
    let label = label.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

/// Control characters and the Unicode line and paragraph separators: never part of a
/// keyword's one-line value.
fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A Chinese character: the CJK ideograph blocks (not Chinese punctuation, a symbol).
fn is_chinese(c: char) -> bool {
    matches!(c,
        '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2EBEF}'
        | '\u{30000}'..='\u{3134F}')
}

/// A letter: alphabetic, but not a Chinese character.
fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !is_chinese(c)
}

/// A symbol: a printable character that is neither Chinese, a letter nor a digit (spaces and
/// punctuation, full-width ones included).
fn is_symbol(c: char) -> bool {
    !is_control(c) && !is_chinese(c) && !is_letter(c) && !c.is_ascii_digit()
}

fn is_digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Digits with an optional decimal part: `42`, `3.14`.
fn is_decimal(s: &str) -> bool {
    match s.split_once('.') {
        Some((int, frac)) => is_digits(int, 1, 32) && is_digits(frac, 1, 32),
        None => is_digits(s, 1, 32),
    }
}

/// One value, or two joined by `~` (spaces around it allowed).
fn is_range(s: &str, item: impl Fn(&str) -> bool) -> bool {
    match s.split_once('~') {
        Some((from, to)) => item(from.trim()) && item(to.trim()),
        None => item(s),
    }
}

/// A date and a time separated by spaces. For a date keyword the time is optional, for a time
/// keyword the date is.
fn date_and_time(s: &str, date_keyword: bool) -> bool {
    match s.rsplit_once(' ') {
        Some((date, time)) => is_date(date.trim_end()) && is_clock(time),
        None if date_keyword => is_date(s),
        None => is_clock(s),
    }
}

fn in_range(s: &str, min: u32, max: u32) -> bool {
    s.parse::<u32>().is_ok_and(|n| (min..=max).contains(&n))
}

/// `15:01` or `15:01:59`, 24-hour.
fn is_clock(s: &str) -> bool {
    let mut parts = s.split(':');
    let (Some(h), Some(m)) = (parts.next(), parts.next()) else {
        return false;
    };
    let s = parts.next();
    parts.next().is_none()
        && is_digits(h, 1, 2)
        && in_range(h, 0, 23)
        && is_digits(m, 2, 2)
        && in_range(m, 0, 59)
        && s.is_none_or(|s| is_digits(s, 2, 2) && in_range(s, 0, 59))
}

fn is_year(s: &str) -> bool {
    is_digits(s, 4, 4)
}

fn is_month(s: &str) -> bool {
    is_digits(s, 1, 2) && in_range(s, 1, 12)
}

fn is_day(s: &str) -> bool {
    is_digits(s, 1, 2) && in_range(s, 1, 31)
}

/// `2019年10月1日`, `2019年10月`, `10月1日`, or the same with `-`, `/` or `.` between the
/// parts (`2019-10-01`, `2019-10`, `10-01`).
fn is_date(s: &str) -> bool {
    if let Some(rest) = s.strip_suffix('日') {
        return match rest.split_once('月') {
            Some((ym, d)) => is_day(d) && year_month(ym, true),
            None => false,
        };
    }
    if let Some(ym) = s.strip_suffix('月') {
        return year_month(ym, false);
    }
    let Some(sep) = ['-', '/', '.'].into_iter().find(|c| s.contains(*c)) else {
        return false;
    };
    let parts: Vec<&str> = s.split(sep).collect();
    match parts.as_slice() {
        [y, m, d] => is_year(y) && is_month(m) && is_day(d),
        [y, m] if y.len() == 4 => is_year(y) && is_month(m),
        [m, d] => is_month(m) && is_day(d),
        _ => false,
    }
}

/// `2019年10` (a year is needed unless a day follows) or `10` (with `year_optional`).
fn year_month(s: &str, year_optional: bool) -> bool {
    match s.split_once('年') {
        Some((y, m)) => is_year(y) && is_month(m),
        None => year_optional && is_month(s),
    }
}

/// Currency symbols an amount may start with.
const CURRENCY: &[char] = &[
    '¥', '￥', '$', '＄', '€', '£', '￡', '₩', '￦', '₹', '₽', '₺', '₫', '₱', '₪', '₴', '¢',
];

/// `¥8.80`, `$12`, `¥100元`: one currency symbol, up to 10 digits, optional decimals.
fn is_amount(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(symbol) = chars.next() else {
        return false;
    };
    if !CURRENCY.contains(&symbol) {
        return false;
    }
    let number = chars.as_str();
    let number = number.strip_suffix('元').unwrap_or(number);
    match number.split_once('.') {
        Some((int, frac)) => is_digits(int, 1, 10) && is_digits(frac, 1, 10),
        None => is_digits(number, 1, 10),
    }
}

/// `粤A8Z888挂`: up to 8 characters, letters or digits inside, Chinese allowed at either end.
fn is_car_number(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    let plain = |c: &char| c.is_ascii_alphanumeric();
    let end = |c: &char| plain(c) || is_chinese(*c);
    match chars.as_slice() {
        [] => false,
        [only] => end(only),
        [first, middle @ .., last] => {
            chars.len() <= 8 && end(first) && end(last) && middle.iter().all(plain)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(key: &str, kind: KeywordType, label: Option<&str>) -> Keyword {
        Keyword {
            key: key.into(),
            kind,
            label: label.map(Into::into),
        }
    }

    #[test]
    fn content_is_parsed_into_keywords() {
        use KeywordType as T;
        let cases: Vec<(&str, &str, TemplateKind, Vec<Keyword>)> = vec![
            (
                "category content, full-width colons",
                "商品名称：{{thing1.DATA}}\n下单时间：{{time2.DATA}}\n订单金额：{{amount3.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("thing1", T::Thing, Some("商品名称")),
                    kw("time2", T::Time, Some("下单时间")),
                    kw("amount3", T::Amount, Some("订单金额")),
                ],
            ),
            (
                "ASCII colons, spaces and CRLF line ends",
                "Order no: {{character_string1.DATA}}\r\n  Status :{{phrase2.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("character_string1", T::CharacterString, Some("Order no")),
                    kw("phrase2", T::Phrase, Some("Status")),
                ],
            ),
            (
                "every typed prefix",
                "{{thing1.DATA}}{{number2.DATA}}{{letter3.DATA}}{{symbol4.DATA}}\
                 {{character_string5.DATA}}{{time6.DATA}}{{date7.DATA}}{{amount8.DATA}}\
                 {{phone_number9.DATA}}{{car_number10.DATA}}{{name11.DATA}}{{phrase12.DATA}}\
                 {{const13.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("thing1", T::Thing, None),
                    kw("number2", T::Number, None),
                    kw("letter3", T::Letter, None),
                    kw("symbol4", T::Symbol, None),
                    kw("character_string5", T::CharacterString, None),
                    kw("time6", T::Time, None),
                    kw("date7", T::Date, None),
                    kw("amount8", T::Amount, None),
                    kw("phone_number9", T::PhoneNumber, None),
                    kw("car_number10", T::CarNumber, None),
                    kw("name11", T::Name, None),
                    kw("phrase12", T::Phrase, None),
                    kw("const13", T::Const, None),
                ],
            ),
            (
                "legacy content with first and remark",
                "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n状态：{{keyword2.DATA}}\n{{remark.DATA}}",
                TemplateKind::Legacy,
                vec![
                    kw("first", T::Legacy, None),
                    kw("keyword1", T::Legacy, Some("订单号")),
                    kw("keyword2", T::Legacy, Some("状态")),
                    kw("remark", T::Legacy, None),
                ],
            ),
            (
                "a free key makes every key legacy",
                "名称：{{thing1.DATA}}\n{{keyword2.DATA}}",
                TemplateKind::Legacy,
                vec![
                    kw("thing1", T::Legacy, Some("名称")),
                    kw("keyword2", T::Legacy, None),
                ],
            ),
            (
                "no label: text without a colon, or none",
                "您好 {{thing1.DATA}}\n{{time2.DATA}}\n：{{phrase3.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("thing1", T::Thing, None),
                    kw("time2", T::Time, None),
                    kw("phrase3", T::Phrase, None),
                ],
            ),
            (
                "two on one line: each labelled by the text between",
                "From: {{time1.DATA}} to: {{time2.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("time1", T::Time, Some("From")),
                    kw("time2", T::Time, Some("to")),
                ],
            ),
            (
                "duplicate keys are listed once; a later label fills a missing one",
                "{{thing1.DATA}}\n名称：{{thing1.DATA}}\n时间：{{time2.DATA}}\n其他：{{time2.DATA}}",
                TemplateKind::Category,
                vec![
                    kw("thing1", T::Thing, Some("名称")),
                    kw("time2", T::Time, Some("时间")),
                ],
            ),
            (
                "not placeholders: unknown prefix is legacy, broken braces are text",
                "{{thingx.DATA}} {{thing1}} {{ thing2.DATA }} {{a b.DATA}} {{",
                TemplateKind::Legacy,
                vec![kw("thingx", T::Legacy, None)],
            ),
            (
                "no placeholders at all",
                "感谢您的关注",
                TemplateKind::Legacy,
                vec![],
            ),
        ];
        for (case, content, kind, keywords) in cases {
            let shape = TemplateShape::parse(content);
            assert_eq!(shape.kind, kind, "{case}");
            assert_eq!(shape.keywords, keywords, "{case}");
        }
    }

    #[test]
    fn each_type_holds_its_rule() {
        use KeywordType as T;
        let cases: &[(T, &[&str], &[&str])] = &[
            (
                T::Thing,
                &[
                    "无线耳机",
                    "Order 42, shipped!",
                    "二十个字二十个字二十个字二十个字二十个字",
                ],
                &[
                    "",
                    "二十一个字二十一个字二十一个字二十一个字二",
                    "two\nlines",
                    "tab\there",
                ],
            ),
            (
                T::Number,
                &["42", "3.14", "00012345678901234567890123456789"],
                &[
                    "",
                    "-1",
                    "1.",
                    ".5",
                    "1,000",
                    "12a",
                    "123456789012345678901234567890123",
                ],
            ),
            (
                T::Letter,
                &["abc", "ABCxyz"],
                &["", "ab1", "a b", "中文", &"a".repeat(33)],
            ),
            (
                T::Symbol,
                &["★", "!@#$%", "，。"],
                &["", "a", "1", "!!!!!!", "中"],
            ),
            (
                T::CharacterString,
                &["SN-2023-0001", "a_b.c", "12345678901234567890123456789012"],
                &["", "订单1", "123456789012345678901234567890123"],
            ),
            (
                T::Time,
                &[
                    "15:01",
                    "9:05",
                    "23:59:59",
                    "2019年10月1日 15:01",
                    "2019-10-01 15:01",
                    "2019/10/01 15:01",
                    "15:01~16:00",
                    "2019年10月1日 15:01 ~ 2019年10月1日 16:00",
                ],
                &[
                    "",
                    "24:00",
                    "15:1",
                    "15:60",
                    "2019年10月1日",
                    "15:01~",
                    "下午3点",
                    "15:01~16:00~17:00",
                ],
            ),
            (
                T::Date,
                &[
                    "2019年10月1日",
                    "2019年10月",
                    "10月1日",
                    "2019-10-01",
                    "2019/10/01",
                    "2019.10.01",
                    "2019-10",
                    "10-01",
                    "2019-10-01 15:01",
                    "2019年10月1日~2019年10月7日",
                ],
                &[
                    "",
                    "2019-13-01",
                    "2019-10-32",
                    "19-10-01",
                    "2019-10/01",
                    "2019",
                    "15:01",
                    "明天",
                ],
            ),
            (
                T::Amount,
                &["¥8.80", "￥100", "$12", "¥100元", "€0.5", "¥1234567890"],
                &[
                    "",
                    "8.80",
                    "¥",
                    "¥8.80元元",
                    "¥¥8",
                    "¥12345678901",
                    "¥1,000",
                    "8.80元",
                ],
            ),
            (
                T::PhoneNumber,
                &["+86-0766-66888866", "13800138000", "(010) 1234"],
                &["", "+86-0766-668888661", "phone", "电话"],
            ),
            (
                T::CarNumber,
                &["粤A8Z888挂", "京A12345", "AB1234", "京"],
                &["", "粤A8Z8888挂", "粤-A8Z888", "粤A中888"],
            ),
            (
                T::Name,
                &["张三", "欧阳娜娜娜娜娜娜娜娜", "Zhang San", "O'Brien-Smith"],
                &[
                    "",
                    "欧阳娜娜娜娜娜娜娜娜娜",
                    "Agent 007",
                    "张三 Zhang",
                    &"a".repeat(21),
                ],
            ),
            (
                T::Phrase,
                &["配送中", "已发货", "五个中文字"],
                &["", "六个中文字符", "OK", "已 发货"],
            ),
            (T::Const, &[], &["", "anything"]),
            (
                T::Legacy,
                &["", "anything\nat all", &"x".repeat(200)],
                &[&"x".repeat(201)],
            ),
        ];
        for (kind, valid, invalid) in cases {
            for v in *valid {
                assert!(kind.accepts(v), "{} should accept {v:?}", kind.as_str());
            }
            for v in *invalid {
                assert!(!kind.accepts(v), "{} should refuse {v:?}", kind.as_str());
            }
        }
    }

    fn shape(content: &str) -> TemplateShape {
        TemplateShape::parse(content)
    }

    fn keys(problems: &[KeyProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn check_lists_every_problem_in_template_order_then_unknown_keys() {
        let order = shape("名称：{{thing1.DATA}}\n时间：{{time2.DATA}}\n提示：{{const3.DATA}}");
        assert!(
            order
                .check([("thing1", "耳机"), ("time2", "15:01")])
                .is_empty()
        );
        let problems = order.check([
            ("remark", "x"),
            ("zzz", "x"),
            ("const3", "x"),
            ("thing1", "two\nlines"),
        ]);
        assert_eq!(
            keys(&problems),
            ["thing1", "time2", "const3", "remark", "zzz"]
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("data.thing1: not a valid thing: up to 20"),
            "{text:?}"
        );
        assert!(
            text[1].contains("missing") && text[1].contains("时间"),
            "{text:?}"
        );
        assert!(text[2].contains("const"), "{text:?}");
        assert!(text[3].contains("since May 2023"), "{text:?}");
        assert!(text[4].contains("thing1, time2, const3"), "{text:?}");
    }

    #[test]
    fn legacy_templates_take_their_keys_optionally_and_first_only_if_listed() {
        let old = shape("{{first.DATA}}\n订单号：{{keyword1.DATA}}\n{{remark.DATA}}");
        assert!(
            old.check([("keyword1", "42")]).is_empty(),
            "missing keys are fine"
        );
        assert!(old.check([("first", "hi"), ("remark", "bye")]).is_empty());
        let long = "x".repeat(201);
        assert_eq!(
            keys(&old.check([("keyword1", long.as_str())])),
            ["keyword1"]
        );
        let without = shape("订单号：{{keyword1.DATA}}");
        assert!(without.is_dropped_key("first") && !old.is_dropped_key("first"));
        assert_eq!(keys(&without.check([("first", "hi")])), ["first"]);
    }
}
