//! The index loader on arbitrary bytes: a damaged or hostile `index.earshot` must give an error
//! that names it, never a panic or an allocation sized by a count read from the file.
#![no_main]

use std::path::Path;

use earshot::index::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/db/index.earshot");
    match format::from_bytes(data, path, Path::new("/fuzz/db")) {
        Ok(index) => {
            // Whatever loads must be usable: every segment points at a file.
            for mode in index.modes.values() {
                for s in &mode.segments {
                    assert!((s.file as usize) < index.files.len());
                }
                assert_eq!(mode.codes.len(), mode.segments.len() * mode.words());
            }
        }
        Err(e) => assert!(e.to_string().contains("/fuzz/db"), "{e}"),
    }
});
