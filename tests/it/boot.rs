//! Restored disks boot. Each fixture from `fixtures/boot/build.sh` (BIOS+MBR,
//! BIOS+GPT, UEFI+GPT) is backed up, restored onto a same-size file and
//! onto a file twice as large, compared byte for byte, checked by
//! `sgdisk -v` (GPT), and booted headless in QEMU with the software CPU
//! until the guest prints its marker on the serial console.

use crate::it::common::*;

const NEEDS: &[&str] = &[
    "root",
    "qemu-system-x86_64",
    "sgdisk",
    "sfdisk",
    "syslinux",
    "mcopy",
    "mkfs.fat",
    "busybox",
    "cpio",
    "apt-get",
];

fn round_trip(test: &str, fixture: &str, firmware: &str, gpt: bool) {
    if !have(test, NEEDS) {
        return;
    }
    let source = boot_fixtures().join(fixture);
    let bytes = std::fs::read(&source).expect("fixture");
    let size = bytes.len() as u64;
    let sandbox = Sandbox::new();
    let id = sandbox.backup(&source)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    let same = sandbox.path("same.img");
    sandbox.restore(&id, &same, &["--verify"]).ok();
    assert_file_is(&same, &bytes, "same-size restore");

    let double = sandbox.path("double.img");
    let size_arg = (2 * size).to_string();
    sandbox
        .restore(&id, &double, &["--size", &size_arg, "--verify"])
        .ok();
    let restored = std::fs::read(&double).unwrap();
    assert_eq!(restored.len() as u64, 2 * size);
    // Boot code, partition table and every partition are the source's; only
    // the GPT headers (LBA 1 and the end) change, so compare from LBA 2 on
    // for GPT (the protective MBR's size field changes too).
    let from = if gpt { 1024 } else { 0 };
    let last_partition_end = (size - (1 << 20)) as usize;
    assert_bytes_equal(
        &restored[from..last_partition_end],
        &bytes[from..last_partition_end],
        "twice-as-large restore",
    );
    assert_bytes_equal(&restored[..440], &bytes[..440], "boot code");
    if gpt {
        sgdisk_clean(&source);
        sgdisk_clean(&same);
        sgdisk_clean(&double);
    }
    let a = boots(&same, firmware);
    let b = boots(&double, firmware);
    eprintln!("{fixture}: same size: {a}\n{fixture}: twice as large: {b}");
}

// Pins: a BIOS+MBR disk (syslinux) restored onto a same-size and a twice-as-large file is byte-identical where it matters and boots in QEMU.
#[test]
fn bios_mbr_disk_boots_after_restore() {
    round_trip(
        "bios_mbr_disk_boots_after_restore",
        "bios-mbr.img",
        "bios",
        false,
    );
}

// Pins: a BIOS+GPT disk (syslinux gptmbr) restored onto a same-size and a twice-as-large file has a clean GPT (sgdisk -v) and boots in QEMU.
#[test]
fn bios_gpt_disk_boots_after_restore() {
    round_trip(
        "bios_gpt_disk_boots_after_restore",
        "bios-gpt.img",
        "bios",
        true,
    );
}

// Pins: a UEFI+GPT disk (systemd-boot on an ESP) restored onto a same-size and a twice-as-large file has a clean GPT (sgdisk -v) and boots in QEMU with OVMF.
#[test]
fn uefi_gpt_disk_boots_after_restore() {
    round_trip(
        "uefi_gpt_disk_boots_after_restore",
        "uefi-gpt.img",
        "uefi",
        true,
    );
}

// Pins: a UEFI+GPT disk restored onto a real block device (a loop device twice the size) gets a clean GPT on the device and boots from the device's bytes.
#[test]
fn uefi_gpt_disk_restored_onto_a_block_device_boots() {
    let test = "uefi_gpt_disk_restored_onto_a_block_device_boots";
    if !have(test, NEEDS) || !have(test, &["loop devices", "losetup"]) {
        return;
    }
    let source = boot_fixtures().join("uefi-gpt.img");
    let size = std::fs::metadata(&source).unwrap().len();
    let sandbox = Sandbox::new();
    let id = sandbox.backup(&source)["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    let backing = sandbox.path("device.img");
    Image::sparse(backing.clone(), 2 * size);
    let device = LoopDevice::attach(&backing);
    sandbox.restore(&id, &device.path, &["--verify"]).ok();
    sgdisk_clean(&device.path);
    drop(device);
    let line = boots(&backing, "uefi");
    eprintln!("uefi-gpt.img on a loop device: {line}");
}
