//! Copy-on-write activation: on a file system with reflinks (XFS here, on a loop device) an
//! activated file shares its blocks with the store's object instead of copying them, and the
//! result is still an independent tree: writing to it changes nothing in the store. Needs root,
//! `mkfs.xfs` and a loop device; skipped with a message where the machine has none of them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::*;

/// An XFS file system on a loop device, mounted at `mnt` until dropped.
struct Xfs {
    mnt: PathBuf,
}

impl Xfs {
    fn mount(dir: &Path) -> Result<Xfs, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let img = dir.join("xfs.img");
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).map_err(|e| e.to_string())?;
        fs::File::create(&img)
            .and_then(|f| f.set_len(320 << 20))
            .map_err(|e| e.to_string())?;
        let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
            let o = cmd
                .output()
                .map_err(|e| format!("{what} is not installed ({e})"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{what} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        run(
            Command::new("mkfs.xfs")
                .args(["-q", "-f", "-m", "reflink=1"])
                .arg(&img),
            "mkfs.xfs",
        )?;
        run(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
            "mount -o loop",
        )?;
        Ok(Xfs { mnt })
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether `filefrag -v` reports every extent of `file` as shared.
fn all_extents_shared(file: &Path) -> Result<bool, String> {
    let o = Command::new("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .map_err(|e| format!("filefrag is not installed ({e})"))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && l.contains(':'))
        .collect();
    Ok(!extents.is_empty() && extents.iter().all(|l| l.contains("shared")))
}

#[test]
fn activation_on_xfs_clones_files_and_the_result_is_independent() {
    let _s = alone();
    let work = tempfile::tempdir().unwrap();
    let xfs = match Xfs::mount(work.path()) {
        Ok(x) => x,
        Err(why) => {
            eprintln!("skipping activation_on_xfs_clones_files: {why}");
            return;
        }
    };
    let src = xfs.mnt.join("src");
    fs::create_dir_all(src.join("bin")).unwrap();
    let big: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(src.join("bin/tool"), &big).unwrap();
    fs::write(src.join("step.sh"), "echo hi\n").unwrap();
    let home = xfs.mnt.join("home");
    import(&home, &src, Some("r/cow/1.0.0"));
    let dest = xfs.mnt.join("work/step");
    run_ok(&mut export_cmd(&home, "r/cow/1.0.0", &dest));
    if let Err(e) = diff_trees(&src, &dest) {
        panic!("the activated tree differs from its source: {e}");
    }
    match all_extents_shared(&dest.join("bin/tool")) {
        Ok(shared) => assert!(shared, "the activated file was copied, not cloned"),
        Err(why) => {
            eprintln!("skipping the extent check: {why}");
        }
    }
    // Independent: writing to the activated copy leaves the store's object as it was.
    let mut changed = big.clone();
    changed[100] ^= 0xff;
    fs::write(dest.join("bin/tool"), &changed).unwrap();
    run_ok(&mut export_cmd(
        &home,
        "r/cow/1.0.0",
        &xfs.mnt.join("again/step"),
    ));
    assert_eq!(fs::read(xfs.mnt.join("again/step/bin/tool")).unwrap(), big);
    assert_fsck_clean(&home);
}
