//! Which disks a restore may go to, and the restore command that checks,
//! once it holds the disk exclusively, that it is still the disk chosen.

use super::disks::Disk;

/// Disks a restore may write: not the medium, not a CD drive or a
/// read-only disk, not a disk holding the repository (a repository on one
/// partition rules out the whole disk), and not a disk with anything
/// mounted (which also catches the repository's filesystem when sysfs
/// cannot name its disk, as with btrfs).
pub fn candidates<'a>(disks: &'a [Disk], repo_disk: Option<&str>) -> Vec<&'a Disk> {
    disks
        .iter()
        .filter(|d| {
            !d.is_medium && !d.read_only && !d.mounted && Some(d.name.as_str()) != repo_disk
        })
        .collect()
}

/// `restore SNAPSHOT /dev/NAME --verify` with the identity the disk had
/// when it was chosen: restore refuses a device of another size or serial
/// (kernel names can move when disks come and go).
pub fn restore_args(snapshot: &str, target: &Disk, grow: bool) -> Vec<String> {
    let mut args = vec![
        "restore".to_string(),
        snapshot.to_string(),
        target.path().display().to_string(),
        "--verify".to_string(),
        "--expect-size".to_string(),
        target.size.to_string(),
    ];
    if let Some(id) = target.identity() {
        args.push("--expect-serial".into());
        args.push(id.to_string());
    }
    if grow {
        args.push("--grow-last-partition".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, medium: bool, ro: bool) -> Disk {
        Disk {
            name: name.into(),
            size: 1 << 30,
            model: None,
            serial: Some(format!("S-{name}")),
            wwn: None,
            read_only: ro,
            is_medium: medium,
            mounted: false,
            partitions: Vec::new(),
        }
    }

    #[test]
    fn the_medium_the_repository_disk_and_cd_drives_are_never_targets() {
        let mut mounted = disk("sdd", false, false);
        mounted.mounted = true;
        let disks = [
            disk("sda", true, false),
            disk("sdb", false, false),
            disk("sdc", false, false),
            disk("sr0", false, true),
            mounted,
        ];
        let names: Vec<&str> = candidates(&disks, Some("sdb"))
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(names, vec!["sdc"]);
    }

    #[test]
    fn the_restore_names_the_identity_it_expects() {
        let args = restore_args("latest", &disk("vdc", false, false), true);
        assert_eq!(
            args.join(" "),
            "restore latest /dev/vdc --verify --expect-size 1073741824 --expect-serial S-vdc --grow-last-partition"
        );
    }
}
