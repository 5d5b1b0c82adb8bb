//! `Name::parse`: never panics; what it accepts prints back to itself and is safe as a path.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::Name;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = Name::parse(s) else {
        return;
    };
    let printed = name.to_string();
    assert_eq!(printed, s, "a parsed name prints as what was parsed");
    assert_eq!(Name::parse(&printed).ok().as_ref(), Some(&name));
    assert_eq!(
        Name::new(name.route(), name.id(), name.version()).ok().as_ref(),
        Some(&name)
    );
    for part in [name.route(), name.id(), name.version()] {
        assert!(!part.is_empty());
        assert!(part != "." && part != "..", "{part:?} as a name component");
        assert!(!part.contains(['/', '\\', '\0']), "{part:?} as a name component");
    }
});
