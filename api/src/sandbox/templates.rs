//! The simulated official account's templates: three category templates that between them use
//! every keyword type, and one old industry-library template with free keys. `SANDBOX_TEMPLATE`,
//! the sandbox's default, is the order-shipped one. A send is judged by the service's own
//! keyword rules (`domain::TemplateShape`), so the simulator answers 47003 for exactly what the
//! service refuses before queueing, and shows what WeChat shows: no `first`, `remark` or
//! custom colours (dropped since May 2023), and `const` keywords with the template's text.
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::SANDBOX_TEMPLATE_ID;
use crate::domain::{KeywordType, TemplateKind, TemplateShape};

/// One template of the simulated account, as `get_all_private_template` lists it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SandboxTemplate {
    /// Its id.
    pub template_id: &'static str,
    /// Its title.
    pub title: &'static str,
    /// The industry it was chosen under (legacy templates only).
    pub primary_industry: &'static str,
    /// The sub-industry it was chosen under.
    pub deputy_industry: &'static str,
    /// Its keywords as placeholders.
    pub content: &'static str,
    /// A filled-in example.
    pub example: &'static str,
    /// The text of each `const` keyword: set by the template, never by the sender.
    #[serde(skip)]
    pub fixed: &'static [(&'static str, &'static str)],
}

/// The order-shipped template's id (the sandbox's default template).
pub const ORDER_SHIPPED: &str = SANDBOX_TEMPLATE_ID;

/// Every template of the simulated account.
pub const LIBRARY: [SandboxTemplate; 4] = [
    SandboxTemplate {
        template_id: ORDER_SHIPPED,
        title: "订单发货通知",
        primary_industry: "",
        deputy_industry: "",
        content: "商品名称：{{thing1.DATA}}\n订单编号：{{character_string2.DATA}}\n\
                  发货时间：{{time3.DATA}}\n订单金额：{{amount4.DATA}}\n订单状态：{{phrase5.DATA}}",
        example: "商品名称：无线耳机\n订单编号：202612020001\n发货时间：2026年12月2日 15:01\n\
                  订单金额：¥199.00\n订单状态：已发货",
        fixed: &[],
    },
    SandboxTemplate {
        template_id: "SANDBOX_TEMPLATE_BOOKING",
        title: "预约成功通知",
        primary_industry: "",
        deputy_industry: "",
        content: "预约人：{{name1.DATA}}\n联系电话：{{phone_number2.DATA}}\n\
                  预约日期：{{date3.DATA}}\n预约人数：{{number4.DATA}}\n温馨提示：{{const5.DATA}}",
        example: "预约人：张三\n联系电话：+86-0766-66888866\n预约日期：2026年12月5日\n\
                  预约人数：2\n温馨提示：请提前10分钟到店",
        fixed: &[("const5", "请提前10分钟到店")],
    },
    SandboxTemplate {
        template_id: "SANDBOX_TEMPLATE_PARKING",
        title: "车辆入场通知",
        primary_industry: "",
        deputy_industry: "",
        content: "车牌号码：{{car_number1.DATA}}\n入场时间：{{time2.DATA}}\n\
                  停车区域：{{letter3.DATA}}\n车位标记：{{symbol4.DATA}}\n停车场：{{thing5.DATA}}",
        example: "车牌号码：粤A8Z888挂\n入场时间：2026年12月2日 08:30\n停车区域：B\n\
                  车位标记：★\n停车场：科技园停车场",
        fixed: &[],
    },
    SandboxTemplate {
        template_id: "SANDBOX_TEMPLATE_LEGACY",
        title: "订单状态更新",
        primary_industry: "IT科技",
        deputy_industry: "互联网|电子商务",
        content: "{{first.DATA}}\n订单号：{{keyword1.DATA}}\n订单状态：{{keyword2.DATA}}\n\
                  {{remark.DATA}}",
        example: "您的订单状态已更新\n订单号：202612020001\n订单状态：已发货\n感谢您的支持",
        fixed: &[],
    },
];

/// Keys WeChat accepts in a send but has not shown since May 2023.
const HIDDEN_KEYS: [&str; 2] = ["first", "remark"];

impl SandboxTemplate {
    /// The template with `template_id`, if the library has it.
    pub fn find(template_id: &str) -> Option<&'static Self> {
        LIBRARY.iter().find(|t| t.template_id == template_id)
    }

    /// Its keywords.
    pub fn shape(&self) -> TemplateShape {
        TemplateShape::parse(self.content)
    }

    /// What WeChat makes of a send's `data` (already known to be `{key: {value: string}}`):
    /// the fields the phone shows, or the first key WeChat refuses (47003). `first` and
    /// `remark` of a category template are dropped unread, as WeChat does, never refused.
    pub fn accept(&self, data: &Map<String, Value>) -> Result<Value, String> {
        let shape = self.shape();
        let fields: Vec<(&str, &str)> = data
            .iter()
            .filter(|(k, _)| !(shape.kind == TemplateKind::Category && shape.is_dropped_key(k)))
            .map(|(k, v)| (k.as_str(), v["value"].as_str().unwrap_or_default()))
            .collect();
        if let Some(problem) = shape.check(fields.iter().copied()).into_iter().next() {
            return Err(problem.key);
        }
        let mut shown = Map::new();
        for k in &shape.keywords {
            let value = match k.kind {
                KeywordType::Const => self
                    .fixed
                    .iter()
                    .find(|(key, _)| *key == k.key)
                    .map(|(_, text)| *text),
                _ if HIDDEN_KEYS.contains(&k.key.as_str()) => None,
                _ => fields
                    .iter()
                    .find(|(key, _)| *key == k.key)
                    .map(|(_, v)| *v),
            };
            if let Some(value) = value {
                shown.insert(k.key.clone(), json!({ "value": value }));
            }
        }
        Ok(Value::Object(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of a template's example, in the order of its keywords.
    fn example_data(t: &SandboxTemplate) -> Map<String, Value> {
        let shape = t.shape();
        t.example
            .lines()
            .zip(&shape.keywords)
            .filter(|(_, k)| k.kind != KeywordType::Const)
            .map(|(line, k)| {
                let value = line.split_once('：').map_or(line, |(_, v)| v);
                (k.key.clone(), json!({ "value": value }))
            })
            .collect()
    }

    #[test]
    fn every_example_is_accepted_and_every_type_is_used() {
        let mut types = Vec::new();
        for t in &LIBRARY {
            let data = example_data(t);
            let shown = t
                .accept(&data)
                .unwrap_or_else(|key| panic!("{}: its example is refused at {key}", t.template_id));
            for (key, text) in t.fixed {
                assert_eq!(shown[*key]["value"], *text, "{}", t.template_id);
            }
            types.extend(t.shape().keywords.iter().map(|k| k.kind));
        }
        for kind in [
            KeywordType::Thing,
            KeywordType::Number,
            KeywordType::Letter,
            KeywordType::Symbol,
            KeywordType::CharacterString,
            KeywordType::Time,
            KeywordType::Date,
            KeywordType::Amount,
            KeywordType::PhoneNumber,
            KeywordType::CarNumber,
            KeywordType::Name,
            KeywordType::Phrase,
            KeywordType::Const,
            KeywordType::Legacy,
        ] {
            assert!(types.contains(&kind), "no sandbox template uses {kind:?}");
        }
        assert_eq!(
            SandboxTemplate::find(ORDER_SHIPPED).map(|t| t.shape().kind),
            Some(TemplateKind::Category),
            "the default is a category template"
        );
    }

    #[test]
    fn first_and_remark_are_dropped_and_bad_values_refused() {
        let order = SandboxTemplate::find(ORDER_SHIPPED).expect("default");
        let mut data = example_data(order);
        data.insert("first".into(), json!({"value": "Hello"}));
        data.insert("remark".into(), json!({"value": "Bye"}));
        let shown = order
            .accept(&data)
            .expect("first and remark are dropped, not refused");
        assert!(shown.get("first").is_none() && shown.get("remark").is_none());
        data.insert("phrase5".into(), json!({"value": "shipped"}));
        assert_eq!(order.accept(&data), Err("phrase5".to_owned()));

        let legacy = SandboxTemplate::find("SANDBOX_TEMPLATE_LEGACY").expect("legacy");
        let shown = legacy.accept(&example_data(legacy)).expect("example");
        assert!(
            shown.get("first").is_none(),
            "WeChat shows no first: {shown}"
        );
        assert_eq!(shown["keyword1"]["value"], "202612020001");
    }
}
