//! The one-pass zip reader (an HTTP body's zip, `src/ingest/zip_stream.rs`) on arbitrary (or
//! scripted, see `common`) input: the same invariants as `ingest_zip`, and a differential check:
//! what the stream reader accepts, the central-directory reader accepts too, with the same id
//! (the stream reader may refuse more, never less).

#![no_main]

mod common;

use std::fs;

use libfuzzer_sys::fuzz_target;
use stepman::fuzzing::{self, Format};

fuzz_target!(|data: &[u8]| {
    common::ingest_and_check(Format::ZipStream, data);
    // The differential check, on the raw bytes (even first byte) and on a built zip (odd).
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let archive = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        common::build_zip(rest)
    };
    let tmp = tempfile::Builder::new()
        .prefix("stepman-fuzz-")
        .tempdir_in(common::scratch())
        .expect("temp dir");
    let streamed = fuzzing::ingest_bytes(
        Format::ZipStream,
        &archive,
        &tmp.path().join("s"),
        common::limits(),
    );
    if let Ok(id) = streamed {
        let whole = fuzzing::ingest_bytes(Format::Zip, &archive, &tmp.path().join("w"), common::limits());
        match whole {
            Ok(w) => assert_eq!(id, w, "the two zip readers made different trees"),
            Err(e) => panic!("the stream reader accepted what the central-directory reader refuses: {e}"),
        }
    }
    for d in ["s", "w"] {
        common::make_writable(&tmp.path().join(d));
    }
    let _ = fs::remove_dir_all(tmp.path());
});
