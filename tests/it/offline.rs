//! Offline mode (`--offline`, `BITRISE_OFFLINE_MODE=true`): never touches the network; a miss
//! fails and lists the versions that are cached.
#![allow(clippy::disallowed_methods)] // tests plant and mutate files directly (clippy.toml)

use crate::support::{self, activate_args, stderr_of};

use std::path::Path;
use std::process::Output;

/// `stepman <args>` against `home`, with `BITRISE_OFFLINE_MODE=true` when `offline_env`.
fn stepman(home: &Path, args: &[&str], offline_env: bool) -> Output {
    let mut c = support::stepman(home, args);
    if offline_env {
        c.env("BITRISE_OFFLINE_MODE", "true");
    }
    support::output(&mut c)
}

#[test]
fn offline_misses_list_cached_versions_and_never_connect() {
    let t = support::TestDir::new();
    let lib = t.path().join("lib");
    support::local_steplib(&lib, &["1.0.0", "2.0.0"]);
    let home = t.path().join("home");
    let lib_s = lib.to_str().unwrap();

    // Local archives are not the network: offline activation of 1.0.0 works and caches it.
    let dest = t.path().join("one");
    let o = stepman(&home, &activate_args(lib_s, "s", "1.0.0", &dest), true);
    assert!(o.status.success(), "{}", stderr_of(&o));

    // Now the archives are on a server that counts connections.
    let server = support::Server::start();
    support::write_steplib_yml(&lib, &[("zip", &format!("{}/", server.url()))]);
    assert!(
        stepman(&home, &["update", "-c", lib_s], false)
            .status
            .success()
    );

    for (flag, env) in [(true, false), (false, true)] {
        let dest = t.path().join(format!("two-{flag}"));
        let mut args = activate_args(lib_s, "s", "2.0.0", &dest);
        if flag {
            args.push("--offline");
        }
        let o = stepman(&home, &args, env);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr_of(&o);
        assert!(
            err.contains("offline") && err.contains("cached versions: 1.0.0"),
            "{err}"
        );
        assert!(!dest.exists());
        // The cached version still activates offline.
        let d1 = t.path().join(format!("one-again-{flag}"));
        let mut args = activate_args(lib_s, "s", "1", &d1);
        if flag {
            args.push("--offline");
        }
        assert!(stepman(&home, &args, env).status.success());
    }
    assert_eq!(
        server.connections(),
        0,
        "offline mode connected to the server"
    );
}
