//! The parser of a name's symlink target: never panics, and accepts only the one exact form
//! `../../../objects/<first two hex digits>/<64 hex digits>`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = stepman::fuzzing::parse_name_target(s) {
        let hex = id.to_hex();
        assert_eq!(s, format!("../../../objects/{}/{hex}", &hex[..2]));
    }
});
