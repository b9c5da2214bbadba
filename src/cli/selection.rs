//! The `--source`, `--partition` and `--host` options, shared by every
//! command that selects snapshots by where they came from.

use platter::engine::snapshots::SourceFilter;

#[derive(clap::Args)]
pub struct SourceArgs {
    /// Only snapshots of this source: the device or image path given to
    /// backup, or where that path leads now
    #[arg(long, value_name = "PATH")]
    source: Option<String>,

    /// With --source: only snapshots of this partition of it (as `platter
    /// inspect` numbers them)
    #[arg(long, value_name = "N", requires = "source")]
    partition: Option<u32>,

    /// Only snapshots taken on this host (a repository several machines
    /// back up to holds each one's disks)
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
}

impl SourceArgs {
    /// The source filter and the host.
    pub fn split(self) -> (Option<SourceFilter>, Option<String>) {
        let partition = self.partition;
        let source = self.source.map(|path| SourceFilter {
            path,
            partition,
            exact: false,
        });
        (source, self.host)
    }
}
