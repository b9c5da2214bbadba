//! Turning a passphrase into a key: Argon2id, memory-hard, with its
//! parameters stored beside each wrapped key so they can change later.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind, Result};

/// Argon2id parameters, as stored in a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// One lane: the memory is what makes a guess costly (the command line's
/// --kdf-memory, 256 MiB by default, fixed rather than scaled up to the
/// machine making the key).
pub const DEFAULT_PARALLELISM: u32 = 1;

/// What unlocking should cost on the machine that makes a key, when the
/// passes are not given: [`calibrated`] picks them for this (restic aims
/// at about 0.5 s too).
pub const CALIBRATION_TARGET: Duration = Duration::from_millis(500);

/// The most passes calibration picks (a very fast machine; a key file may
/// still ask for up to [`MAX_ITERATIONS`]).
const MAX_CALIBRATED: u32 = 10;

/// Parameters with `memory_kib` whose passes make Argon2id take about
/// `target` here (never fewer than 1). One pass and two passes are timed:
/// the first pass also pays for getting the memory, so the cost of each
/// further pass is the difference.
pub fn calibrated(memory_kib: u32, target: Duration) -> Result<KdfParams> {
    let with = |iterations| KdfParams {
        memory_kib,
        iterations,
        parallelism: DEFAULT_PARALLELISM,
    };
    let time = |params: &KdfParams| -> Result<Duration> {
        let began = Instant::now();
        derive(b"calibration", &[0u8; 32], params)?;
        Ok(began.elapsed())
    };
    let one = time(&with(1))?;
    let two = time(&with(2))?;
    Ok(with(passes_for(target, one, two)))
}

fn passes_for(target: Duration, one: Duration, two: Duration) -> u32 {
    if one >= target {
        return 1;
    }
    // A further pass costs at least half the first: a second run that
    // was disturbed (or a clock that did not move) must not ask for more.
    let further = two.saturating_sub(one).max(one / 2).as_nanos().max(1);
    let more = (target - one).as_nanos() / further;
    let more = u32::try_from(more).unwrap_or(u32::MAX);
    more.saturating_add(1).min(MAX_CALIBRATED)
}

/// Bounds on what a key file may ask for: a damaged or hostile one must
/// not make platter allocate without limit or spin for hours.
const MIN_MEMORY_KIB: u32 = 8 * 1024;
const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;
const MAX_ITERATIONS: u32 = 64;
const MAX_PARALLELISM: u32 = 16;

impl KdfParams {
    pub fn check(&self) -> Result<()> {
        let ok = (MIN_MEMORY_KIB..=MAX_MEMORY_KIB).contains(&self.memory_kib)
            && (1..=MAX_ITERATIONS).contains(&self.iterations)
            && (1..=MAX_PARALLELISM).contains(&self.parallelism);
        if ok {
            Ok(())
        } else {
            Err(Error::bad_input(format!(
                "Argon2id parameters out of range (memory {} KiB, {} iterations, {} lanes): \
                 memory must be 8 MiB to 2 GiB, iterations 1 to {MAX_ITERATIONS}, lanes 1 to \
                 {MAX_PARALLELISM}",
                self.memory_kib, self.iterations, self.parallelism
            )))
        }
    }
}

/// The 256-bit key `passphrase` and `salt` give under `params`.
pub fn derive(passphrase: &[u8], salt: &[u8], params: &KdfParams) -> Result<Zeroizing<[u8; 32]>> {
    params.check()?;
    let argon = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| Error::bad_input(format!("Argon2id parameters rejected: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, argon)
        .hash_password_into(passphrase, salt, &mut key[..])
        .map_err(|e| Error::new(ErrorKind::Io, format!("Argon2id failed: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: KdfParams = KdfParams {
        memory_kib: MIN_MEMORY_KIB,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn keys_depend_on_passphrase_salt_and_params() {
        let a = derive(b"correct horse", &[1; 32], &SMALL).unwrap();
        assert_eq!(*a, *derive(b"correct horse", &[1; 32], &SMALL).unwrap());
        assert_ne!(*a, *derive(b"correct horsf", &[1; 32], &SMALL).unwrap());
        assert_ne!(*a, *derive(b"correct horse", &[2; 32], &SMALL).unwrap());
        let more = KdfParams {
            iterations: 2,
            ..SMALL
        };
        assert_ne!(*a, *derive(b"correct horse", &[1; 32], &more).unwrap());
    }

    #[test]
    fn calibration_fits_the_passes_to_the_target_time() {
        let ms = Duration::from_millis;
        // Measured here at 256 MiB: 0.25 s for one pass, 0.41 s for two.
        assert_eq!(passes_for(ms(500), ms(250), ms(410)), 2);
        assert_eq!(passes_for(ms(500), ms(100), ms(180)), 6);
        assert_eq!(passes_for(ms(500), ms(2000), ms(3000)), 1);
        assert_eq!(passes_for(ms(500), ms(1), ms(2)), MAX_CALIBRATED);
        // A clock that did not move, or a second run faster than the first.
        assert_eq!(passes_for(ms(500), ms(10), ms(10)), MAX_CALIBRATED);
        assert_eq!(passes_for(ms(500), ms(300), ms(200)), 2);
        assert_eq!(passes_for(ms(500), ms(200), ms(150)), 4);
        let params = calibrated(MIN_MEMORY_KIB, ms(50)).unwrap();
        assert_eq!(params.memory_kib, MIN_MEMORY_KIB);
        assert!((1..=MAX_CALIBRATED).contains(&params.iterations));
    }

    #[test]
    fn hostile_params_are_refused_before_any_work() {
        for bad in [
            KdfParams {
                memory_kib: u32::MAX,
                ..SMALL
            },
            KdfParams {
                memory_kib: 1,
                ..SMALL
            },
            KdfParams {
                iterations: 0,
                ..SMALL
            },
            KdfParams {
                iterations: 1_000_000,
                ..SMALL
            },
            KdfParams {
                parallelism: 0,
                ..SMALL
            },
        ] {
            assert!(derive(b"x", &[0; 32], &bad).is_err(), "{bad:?} accepted");
        }
    }
}
