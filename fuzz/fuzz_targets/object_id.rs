//! `ObjectId::from_hex`: never panics, accepts exactly 64 lowercase hex digits, round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::ObjectId;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 32 {
        let bytes: [u8; 32] = data[..32].try_into().unwrap();
        let id = ObjectId::from_bytes(bytes);
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(ObjectId::from_hex(&hex), Some(id));
        assert_eq!(id.to_string(), hex);
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let strict = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match ObjectId::from_hex(s) {
        Some(id) => {
            assert!(strict, "accepted {s:?}");
            assert_eq!(id.to_hex(), s);
        }
        None => assert!(!strict, "refused {s:?}"),
    }
});
