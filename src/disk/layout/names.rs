//! Human names for partition type codes: MBR type bytes and GPT type GUIDs.
//! Unknown codes are reported as such, never guessed.

/// The name of an MBR partition type byte.
pub fn mbr_type(code: u8) -> &'static str {
    match code {
        0x00 => "empty",
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 => "extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0b => "W95 FAT32",
        0x0c => "W95 FAT32 (LBA)",
        0x0e => "W95 FAT16 (LBA)",
        0x0f => "W95 extended (LBA)",
        0x11 => "hidden FAT12",
        0x14 => "hidden FAT16 <32M",
        0x16 => "hidden FAT16",
        0x17 => "hidden HPFS/NTFS",
        0x1b => "hidden W95 FAT32",
        0x1c => "hidden W95 FAT32 (LBA)",
        0x1e => "hidden W95 FAT16 (LBA)",
        0x27 => "hidden NTFS WinRE",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x85 => "Linux extended",
        0x8e => "Linux LVM",
        0xa5 => "FreeBSD",
        0xa6 => "OpenBSD",
        0xa8 => "Darwin UFS",
        0xa9 => "NetBSD",
        0xab => "Darwin boot",
        0xaf => "HFS / HFS+",
        0xda => "non-FS data",
        0xee => "GPT protective",
        0xef => "EFI (FAT-12/16/32)",
        0xfd => "Linux raid autodetect",
        _ => "unknown",
    }
}

/// Whether an MBR type byte marks an extended partition (a chain of
/// logical partitions).
pub fn mbr_is_extended(code: u8) -> bool {
    matches!(code, 0x05 | 0x0f | 0x85)
}

/// The GPT type GUID of a BIOS boot partition (GRUB's core image).
pub const GPT_BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";

/// The name of a GPT partition type GUID (upper-case, dashed).
pub fn gpt_type(guid: &str) -> &'static str {
    match guid {
        "00000000-0000-0000-0000-000000000000" => "unused",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => "EFI System",
        GPT_BIOS_BOOT => "BIOS boot",
        "024DEE41-33E7-11D3-9D69-0008C781F39F" => "MBR partition scheme",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4" => "Linux filesystem",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" => "Linux swap",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928" => "Linux LVM",
        "A19D880F-05FC-4D3B-A006-743F0F84911E" => "Linux RAID",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" => "Linux root (x86-64)",
        "44479540-F297-41B2-9AF7-D131D5F0458A" => "Linux root (x86)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE" => "Linux root (ARM64)",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915" => "Linux home",
        "3B8F8425-20E0-4F3B-907F-1A25A76F98E8" => "Linux server data",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172" => "Linux extended boot",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC" => "Linux LUKS",
        "8DA63339-0007-60C0-C436-083AC8230908" => "Linux reserved",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" => "Microsoft basic data",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE" => "Microsoft reserved",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC" => "Windows recovery environment",
        "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3" => "Windows LDM metadata",
        "AF9B60A0-1431-4F62-BC68-3311714A69AD" => "Windows LDM data",
        "48465300-0000-11AA-AA11-00306543ECAC" => "Apple HFS/HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC" => "Apple APFS",
        "426F6F74-0000-11AA-AA11-00306543ECAC" => "Apple boot",
        "516E7CB4-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD disklabel",
        "516E7CB5-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD swap",
        "516E7CB6-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD UFS",
        "516E7CBA-6ECF-11D6-8FF8-00022D09712B" => "FreeBSD ZFS",
        "83BD6B9D-7F41-11DC-BE0B-001560B84F0F" => "FreeBSD boot",
        "6A898CC3-1DD2-11B2-99A6-080020736631" => "Solaris /usr & Apple ZFS",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(mbr_type(0x83), "Linux");
        assert_eq!(mbr_type(0x42), "unknown");
        assert!(mbr_is_extended(0x0f) && !mbr_is_extended(0x83));
        assert_eq!(gpt_type(GPT_BIOS_BOOT), "BIOS boot");
        assert_eq!(gpt_type("01234567-89AB-CDEF-0123-456789ABCDEF"), "unknown");
    }
}
