//! Turning a passphrase into a key: Argon2id, memory-hard, with its
//! parameters stored beside each wrapped key so they can change later.

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

/// 256 MiB and 3 passes: about 0.6 s on a 2020s server core, and 256 MiB
/// of memory for every guess an attacker makes.
pub const DEFAULT_KDF: KdfParams = KdfParams {
    memory_kib: 256 * 1024,
    iterations: 3,
    parallelism: 1,
};

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
