//! Property tests (bounded fuzzing): the parser never panics or hangs on arbitrary bytes, and
//! whatever the writer produces parses back to the same document.
//! `PROPTEST_CASES=100000 cargo test -p yson --test fuzz` runs longer on demand.

use proptest::prelude::*;
use yson::{Node, Value};

fn arb_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        Just(Value::Entity),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Int64),
        any::<u64>().prop_map(Value::Uint64),
        (-1e12f64..1e12).prop_map(Value::Double),
        ".{0,12}".prop_map(Value::String),
    ]
    .prop_map(Node::from);
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = "[a-z_\"\\\\ ]{0,6}";
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Node::list),
            prop::collection::vec((key, inner.clone()), 0..6).prop_map(|entries| {
                let mut map: yson::Map = Vec::new();
                for (k, v) in entries {
                    if !map.iter().any(|(existing, _)| *existing == k) {
                        map.push((k, v));
                    }
                }
                Node::map(map)
            }),
            (
                prop::collection::vec(("[a-z]{1,4}", inner.clone()), 1..3),
                inner
            )
                .prop_map(|(attrs, mut node)| {
                    let mut map: yson::Map = Vec::new();
                    for (k, v) in attrs {
                        if !map.iter().any(|(existing, _)| *existing == k) {
                            map.push((k, v));
                        }
                    }
                    node.attributes = map;
                    node
                }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = yson::parse(&bytes);
        let _ = yson::parse_list_fragment(&bytes);
        let _ = yson::parse_map_fragment(&bytes);
    }

    #[test]
    fn yson_like_text_never_panics(text in "[\\[\\]{}<>=;#%\"a-z0-9.u \\-\\\\]{0,64}") {
        let _ = yson::parse(text.as_bytes());
    }

    #[test]
    fn written_text_parses_back(node in arb_node()) {
        let text = yson::to_text(&node);
        let parsed = yson::parse(text.as_bytes()).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(yson::to_text(&parsed), text);
    }

    #[test]
    fn json_convention_round_trips(node in arb_node()) {
        let back = Node::from_json(&node.to_json()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // JSON loses the int/uint distinction for small values; compare via JSON again.
        prop_assert_eq!(back.to_json(), node.to_json());
    }
}
