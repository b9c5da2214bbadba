//! `platter init`: create a repository.

use platter::codec::Compression;
use platter::repo::Repository;

use super::{Context, output};

/// Create a new repository in an empty or new folder
#[derive(clap::Args)]
pub struct Args {
    /// Chunk size: a power of two from 64K to 16M. Smaller chunks make
    /// incrementals cheaper, larger ones make the map and index smaller.
    #[arg(long, default_value = "1M", value_name = "SIZE", value_parser = super::parse_size)]
    chunk_size: u64,

    /// Compression of stored chunks: lz4 or none
    #[arg(long, default_value = "lz4", value_name = "HOW")]
    compression: String,
}

pub fn run(ctx: &Context, args: Args) -> platter::Result<bool> {
    let chunk_size = args.chunk_size;
    let compression = Compression::parse(&args.compression)?;
    let repo = Repository::init(ctx.repo_path()?, chunk_size, compression)?;
    let config = repo.config();
    if ctx.json {
        output::json(&serde_json::json!({
            "repository": repo.root().display().to_string(),
            "repo_id": config.repo_id,
            "chunk_size": config.chunk_size,
            "compression": config.compression,
        }))?;
    } else {
        output::line(&format!(
            "created repository {} (id {}, chunks of {}, {} compression)",
            repo.root().display(),
            &config.repo_id[..8],
            output::bytes(config.chunk_size),
            config.compression
        ));
    }
    Ok(true)
}
