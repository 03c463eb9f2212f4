//! `trillim pull`, `trillim list` and `trillim models`.

use std::io::Write;

use anyhow::Context;

use super::Store;
use crate::hub::{self, human_size, PullOptions};

/// Download a GGUF model from the Hugging Face Hub into the local store.
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// Hub repository, `org/name` (for example `bartowski/SmolLM2-135M-Instruct-GGUF`).
    pub repo: String,
    /// Branch, tag or commit to download.
    #[arg(long, value_name = "R")]
    pub revision: Option<String>,
    /// Download again even if the files are already in the store.
    #[arg(long)]
    pub force: bool,
    /// Which GGUF file to download when the repository has several (a file name, or a part
    /// of one such as `Q4_K_M`).
    #[arg(long, value_name = "NAME.gguf")]
    pub file: Option<String>,
}

/// List the models in the local store.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {}

/// Search the Hugging Face Hub for GGUF models.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// Search term (without one, the most downloaded GGUF models are shown).
    pub search: Option<String>,
    /// How many results to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `trillim pull`.
pub fn pull(args: PullArgs) -> anyhow::Result<()> {
    let opts = PullOptions {
        revision: args.revision,
        force: args.force,
        file: args.file,
        progress: true,
    };
    let path = hub::pull(&args.repo, opts).with_context(|| format!("cannot pull {}", args.repo))?;
    println!("Pulled {} into {}", args.repo, path.display());
    Ok(())
}

/// `trillim list`.
pub fn list(_args: ListArgs) -> anyhow::Result<()> {
    let store = Store::from_env();
    let models = store
        .list()
        .with_context(|| format!("cannot list the model store at {}", store.root().display()))?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if models.is_empty() {
        writeln!(
            out,
            "No models in {}. Download one with `trillim pull org/name`.",
            store.root().display()
        )?;
        return Ok(());
    }
    write!(out, "{}", format_table(&models))?;
    Ok(())
}

/// The `trillim list` table.
pub fn format_table(models: &[super::StoredModel]) -> String {
    let rows: Vec<[String; 4]> = models
        .iter()
        .map(|m| {
            let arch = m.summary.arch.clone().unwrap_or_else(|| "-".into());
            let mut types = m
                .summary
                .types
                .iter()
                .map(|(t, n)| format!("{t}:{n}"))
                .collect::<Vec<_>>()
                .join(",");
            if types.is_empty() {
                types.push('-');
            }
            if m.files.len() > 1 {
                types.push_str(&format!("  ({} parts)", m.files.len()));
            }
            if let Some(e) = &m.summary.error {
                types.push_str(&format!("  (not loadable: {e})"));
            }
            [m.id.clone(), human_size(m.size), arch, types]
        })
        .collect();
    let header = ["ID", "SIZE", "ARCH", "TYPES"];
    let mut width = header.map(str::len);
    for r in &rows {
        for i in 0..3 {
            width[i] = width[i].max(r[i].chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: [&str; 4]| {
        for (i, c) in cells.iter().enumerate().take(3) {
            s.push_str(&format!("{c:<w$}  ", w = width[i]));
        }
        s.push_str(cells[3]);
        s.push('\n');
    };
    line(&mut s, header);
    for r in &rows {
        line(&mut s, [&r[0], &r[1], &r[2], &r[3]]);
    }
    s
}

/// `trillim models`.
pub fn models(args: ModelsArgs) -> anyhow::Result<()> {
    let term = args.search.as_deref().unwrap_or("");
    let found = hub::search(term, args.limit).context("cannot search the Hub")?;
    let out = std::io::stdout();
    let mut out = out.lock();
    if found.is_empty() {
        writeln!(out, "No GGUF models found for '{term}'.")?;
        return Ok(());
    }
    let w = found.iter().map(|m| m.id.len()).max().unwrap_or(0).max(2);
    writeln!(out, "{:<w$}  {:>10}  {:>7}", "ID", "DOWNLOADS", "LIKES")?;
    for m in &found {
        writeln!(out, "{:<w$}  {:>10}  {:>7}", m.id, m.downloads, m.likes)?;
    }
    Ok(())
}
