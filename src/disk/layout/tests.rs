//! Tables built byte by byte in memory: odd, damaged and hostile ones.
//! Real tables made by sfdisk and sgdisk are tested in tests/it/layout.rs.

use std::cell::RefCell;

use proptest::prelude::*;

use super::*;

struct Mem(RefCell<Vec<u8>>);

impl ReadAt for Mem {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let d = self.0.borrow();
        buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
}

impl WriteAt for Mem {
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.0.borrow_mut()[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }
}

fn entry(d: &mut [u8], at: usize, status: u8, code: u8, start: u32, sectors: u32) {
    d[at] = status;
    d[at + 4] = code;
    d[at + 8..at + 12].copy_from_slice(&start.to_le_bytes());
    d[at + 12..at + 16].copy_from_slice(&sectors.to_le_bytes());
}

/// Marks sector `lba` of `d` as a boot record (an EBR); returns its byte
/// offset.
fn ebr_at(d: &mut [u8], lba: usize) -> usize {
    let at = lba * 512;
    d[at + 510] = 0x55;
    d[at + 511] = 0xAA;
    at
}

fn mbr_disk(sectors: usize) -> Vec<u8> {
    let mut d = vec![0u8; sectors * 512];
    d[510] = 0x55;
    d[511] = 0xAA;
    d
}

fn read(d: Vec<u8>) -> Layout {
    let size = d.len() as u64;
    Layout::read(&Mem(RefCell::new(d)), size, 512, false).unwrap()
}

#[test]
fn mbr_with_logical_partitions() {
    let mut d = mbr_disk(4096);
    entry(&mut d, 446, 0x80, 0x83, 2048, 1024);
    entry(&mut d, 462, 0, 0x05, 3072, 1024);
    // EBR at 3072: logical at +64, next EBR at ext+512.
    let ebr = ebr_at(&mut d, 3072);
    entry(&mut d, ebr + 446, 0, 0x83, 64, 400);
    entry(&mut d, ebr + 462, 0, 0x05, 512, 512);
    let ebr2 = (3072 + 512) * 512;
    d[ebr2 + 510] = 0x55;
    d[ebr2 + 511] = 0xAA;
    entry(&mut d, ebr2 + 446, 0, 0x82, 64, 400);
    let l = read(d);
    assert_eq!(l.table, Table::Mbr);
    let got: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.number, p.start, p.sectors))
        .collect();
    assert_eq!(
        got,
        [
            (1, 2048, 1024),
            (2, 3072, 1024),
            (5, 3136, 400),
            (6, 3648, 400)
        ]
    );
    assert!(l.partitions[0].bootable);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    // The EBRs sit in gaps inside the extended partition.
    assert_eq!(l.gaps(), [(1, 2047), (3072, 64), (3536, 112), (4048, 48)]);
}

#[test]
fn looping_logical_chain_ends_with_a_warning() {
    let mut d = mbr_disk(4096);
    entry(&mut d, 446, 0, 0x0f, 2048, 2048);
    let ebr = ebr_at(&mut d, 2048);
    entry(&mut d, ebr + 446, 0, 0x83, 64, 100);
    entry(&mut d, ebr + 462, 0, 0x05, 0, 2048); // points back at itself
    let l = read(d);
    assert_eq!(l.partitions.len(), 2);
    assert_warns(&l, "loops");
}

#[test]
fn overlapping_and_oversized_partitions_are_named() {
    let mut d = mbr_disk(4096);
    entry(&mut d, 446, 0, 0x83, 2048, 1024);
    entry(&mut d, 462, 0, 0x83, 2500, 1024);
    entry(&mut d, 478, 0, 0x83, 3600, 100_000);
    let l = read(d);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("partitions 1 and 2 overlap")),
        "{:?}",
        l.warnings
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("partition 3 ends at sector 103600, past the end"))
    );
    assert_eq!(
        plan_fit(&l, 4096 * 512, false).unwrap_err().kind(),
        crate::ErrorKind::BadInput
    );
}

#[test]
fn fat_boot_sector_is_not_an_mbr() {
    let mut d = mbr_disk(8192);
    d[0] = 0xEB;
    d[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
    d[0x0D] = 4; // about 2000 clusters: FAT12
    d[0x0E] = 1;
    d[0x10] = 2;
    d[0x11..0x13].copy_from_slice(&512u16.to_le_bytes());
    d[0x13..0x15].copy_from_slice(&8192u16.to_le_bytes());
    d[0x16] = 12;
    let l = read(d);
    assert_eq!(l.table, Table::None);
    assert_eq!(l.content.unwrap().version.as_deref(), Some("FAT12"));
}

#[test]
fn gpt_header_asking_for_a_huge_array_is_refused() {
    let mut s = vec![0u8; 512];
    s[..8].copy_from_slice(gpt::HEADER_SIGNATURE);
    s[12..16].copy_from_slice(&92u32.to_le_bytes());
    s[24..32].copy_from_slice(&1u64.to_le_bytes());
    s[72..80].copy_from_slice(&2u64.to_le_bytes());
    s[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
    s[84..88].copy_from_slice(&128u32.to_le_bytes());
    let crc = gpt::header_crc(&s, 92);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    let why = gpt::Header::parse(&s, 1, 1 << 40).unwrap_err();
    assert!(why.contains("too large"), "{why}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn hostile_tables_never_panic(s0 in proptest::collection::vec(any::<u8>(), 512),
                                  s1 in proptest::collection::vec(any::<u8>(), 512),
                                  signed in any::<bool>()) {
        let mut d = vec![0u8; 64 * 512];
        d[..512].copy_from_slice(&s0);
        d[512..1024].copy_from_slice(&s1);
        if signed {
            d[510] = 0x55;
            d[511] = 0xAA;
            d[512..520].copy_from_slice(gpt::HEADER_SIGNATURE);
            let size = (u32::from_le_bytes([d[524], d[525], d[526], d[527]]) % 600) as usize;
            d[524..528].copy_from_slice(&(size as u32).to_le_bytes());
            if (92..=512).contains(&size) {
                let crc = gpt::header_crc(&d[512..1024], size);
                d[528..532].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let l = read(d);
        let _ = l.gaps();
        let _ = plan_fit(&l, 32 * 512, true);
    }
}

/// Writes a GPT header at `lba` (entries at `entries_lba`) over `array`.
fn put_gpt_header(
    d: &mut [u8],
    lba: u64,
    alternate: u64,
    entries_lba: u64,
    last_usable: u64,
    array: &[u8],
) {
    let at = lba as usize * 512;
    let s = &mut d[at..at + 512];
    s.fill(0);
    s[..8].copy_from_slice(gpt::HEADER_SIGNATURE);
    s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    s[12..16].copy_from_slice(&92u32.to_le_bytes());
    s[24..32].copy_from_slice(&lba.to_le_bytes());
    s[32..40].copy_from_slice(&alternate.to_le_bytes());
    s[40..48].copy_from_slice(&34u64.to_le_bytes());
    s[48..56].copy_from_slice(&last_usable.to_le_bytes());
    s[56..72].copy_from_slice(&[0xAB; 16]);
    s[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    s[80..84].copy_from_slice(&128u32.to_le_bytes());
    s[84..88].copy_from_slice(&128u32.to_le_bytes());
    s[88..92].copy_from_slice(&crc32fast::hash(array).to_le_bytes());
    let crc = gpt::header_crc(s, 92);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    let e = entries_lba as usize * 512;
    d[e..e + array.len()].copy_from_slice(array);
}

/// A disk of `sectors` with a protective MBR and a GPT holding `parts`
/// (first, last LBA), each a "Linux filesystem".
fn gpt_disk(sectors: u64, parts: &[(u64, u64)]) -> Vec<u8> {
    let mut d = mbr_disk(sectors as usize);
    entry(&mut d, 446, 0, 0xEE, 1, (sectors - 1) as u32);
    let mut array = vec![0u8; 128 * 128];
    for (i, &(first, last)) in parts.iter().enumerate() {
        let e = &mut array[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&[
            0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47,
            0x7D, 0xE4,
        ]);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
    }
    let last = sectors - 1;
    put_gpt_header(&mut d, 1, last, 2, last - 33, &array);
    put_gpt_header(&mut d, last, 1, last - 32, last - 33, &array);
    d
}

#[test]
fn gpt_built_here_reads_back() {
    let l = read(gpt_disk(4096, &[(2048, 3000)]));
    assert_eq!(l.table, Table::Gpt);
    assert_eq!(l.partitions[0].type_name, "Linux filesystem");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn a_gpt_behind_an_mbr_with_partitions_of_its_own_is_a_leftover() {
    let mut d = gpt_disk(4096, &[(2048, 3000)]);
    entry(&mut d, 446, 0x80, 0x83, 2048, 1000);
    let l = read(d);
    assert_eq!(l.table, Table::Mbr);
    assert_warns(&l, "leftover");
}

#[test]
fn a_boot_sector_without_partitions_in_front_of_a_filesystem_is_not_a_table() {
    let mut d = mbr_disk(8192);
    d[0] = 0xEB; // GRUB's jump; no BPB
    d[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
    let l = read(d);
    assert_eq!(l.table, Table::None);
    assert_eq!(l.content.map(|c| c.fstype), Some("ext2".to_string()));
}

#[test]
fn ebr_slots_may_come_in_any_order() {
    let mut d = mbr_disk(4096);
    entry(&mut d, 446, 0, 0x05, 2048, 2048);
    let ebr = ebr_at(&mut d, 2048);
    entry(&mut d, ebr + 446, 0, 0x05, 1024, 1024); // the link first
    entry(&mut d, ebr + 462, 0, 0x83, 64, 500);
    let ebr2 = (2048 + 1024) * 512;
    d[ebr2 + 510] = 0x55;
    d[ebr2 + 511] = 0xAA;
    entry(&mut d, ebr2 + 446, 0, 0x82, 64, 500);
    let l = read(d);
    let got: Vec<_> = l.partitions.iter().map(|p| (p.number, p.start)).collect();
    assert_eq!(got, [(1, 2048), (5, 2112), (6, 3136)]);
}

#[test]
fn many_overlapping_partitions_give_a_bounded_list_of_warnings() {
    let mut array = vec![0u8; 128 * 128];
    for i in 0..128 {
        let e = &mut array[i * 128..(i + 1) * 128];
        e[0] = 1;
        e[32..40].copy_from_slice(&100u64.to_le_bytes());
        e[40..48].copy_from_slice(&200u64.to_le_bytes());
    }
    let mut d = gpt_disk(4096, &[]);
    put_gpt_header(&mut d, 1, 4095, 2, 4062, &array);
    let l = read(d);
    assert_eq!(l.partitions.len(), 128);
    assert!(l.warnings.len() <= 33, "{}", l.warnings.len());
    assert!(l.warnings.last().unwrap().contains("more problems"));
}

#[test]
fn partitions_past_the_end_of_a_cut_disk_do_not_break_gaps() {
    let mut d = mbr_disk(4096);
    entry(&mut d, 446, 0, 0x83, 2048, 8000);
    entry(&mut d, 462, 0, 0x83, 12000, 1000);
    let l = read(d);
    assert_eq!(l.gaps(), [(1, 2047)]);
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
}

#[test]
fn hostile_recorded_layouts_are_refused_not_panics() {
    let mut l = read(gpt_disk(4096, &[(2048, 3000)]));
    l.partitions[0].number = 0;
    assert!(plan_fit(&l, 8192 * 512, true).is_err());
    l.partitions[0].number = 1;
    l.sector_size = 0;
    assert!(plan_fit(&l, 8192 * 512, true).is_err());
    l.sector_size = 512;
    l.partitions[0].sectors = u64::MAX;
    assert!(plan_fit(&l, 8192 * 512, false).is_err());
}

#[test]
fn a_gpt_fitted_to_a_larger_disk_reads_back_clean() {
    let mut d = gpt_disk(4096, &[(2048, 3000)]);
    d.resize(8192 * 512, 0);
    let l = Layout::read(
        &Mem(RefCell::new(d[..4096 * 512].to_vec())),
        4096 * 512,
        512,
        true,
    )
    .unwrap();
    let plan = plan_fit(&l, 8192 * 512, true).unwrap().unwrap();
    assert_eq!(plan.grown, Some((1, 953, 8158 - 2048 + 1)));
    let mem = Mem(RefCell::new(d));
    apply_fit(&mem, &plan).unwrap();
    let after = Layout::read(&mem, 8192 * 512, 512, true).unwrap();
    let g = after.gpt.as_ref().unwrap();
    assert!(
        g.primary_ok && g.backup_ok && after.warnings.is_empty(),
        "{after:?}"
    );
    assert_eq!((g.backup_lba, g.last_usable_lba), (8191, 8158));
    assert_eq!(after.partitions[0].end(), 8159);
    // The old backup header (LBA 4095) was zeroed.
    assert!(
        mem.0.borrow()[4095 * 512..4096 * 512]
            .iter()
            .all(|&b| b == 0)
    );
}

#[test]
fn a_target_too_small_for_the_gpt_itself_is_refused_by_the_plan() {
    let l = read(gpt_disk(4096, &[]));
    assert!(plan_fit(&l, 40 * 512, false).is_err());
}

/// `layout` carries a warning that mentions `what`.
fn assert_warns(layout: &Layout, what: &str) {
    assert!(
        layout.warnings.iter().any(|w| w.contains(what)),
        "no warning mentions {what:?}: {:?}",
        layout.warnings
    );
}
