//! Fuzzes what the API server does with an untrusted request body before it reaches the
//! store: content-type dispatch, JSON/YAML/protobuf decoding, apiVersion/kind checks, metadata and
//! schema admission for every registered kind, and selector parsing. None of it may
//! panic; every failure must be an `ApiError` (a 4xx `Status` at the edge).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_apiserver::Registry;
use shoal_apiserver::object::{self, FieldValidation};

const CONTENT_TYPES: [&str; 4] = ["application/json", "application/yaml", "text/plain", ""];

/// Built once: generating the kinds' schemas is far slower than one decode.
static REGISTRY: std::sync::LazyLock<Registry> = std::sync::LazyLock::new(Registry::shoal);

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let registry = &*REGISTRY;
    let ctype = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let body = bytes::Bytes::copy_from_slice(body);
    if let Ok(value) = object::decode(ctype, &body) {
        for def in registry.all() {
            let mut v = value.clone();
            if object::check_type_meta(def, &mut v).is_ok() {
                let _ = object::admit(def, &mut v, FieldValidation::Strict);
            }
            let _ = object::admit(def, &mut value.clone(), FieldValidation::Warn);
        }
    }
    for def in registry.all() {
        let _ = shoal_apiserver::protobuf::decode(def, &body);
    }
    if let Ok(text) = std::str::from_utf8(&body) {
        let _ = shoal_core::selector::LabelSelector::parse(text);
        let _ = shoal_core::selector::FieldSelector::parse(text, &["metadata.name"]);
    }
});
