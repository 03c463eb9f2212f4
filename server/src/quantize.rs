//! `trillim quantize`: a Hugging Face safetensors checkpoint (and, with `--adapter`, a PEFT
//! adapter) into GGUF files the engine runs, placed in the store atomically.
//!
//! Every output is written into a hidden staging directory beside its final place, loaded back
//! as a check, and only then renamed into place (an older directory of the same name is moved
//! aside first and removed once the new one is in). A failure removes the staging directory,
//! so the store never holds half a model and a good model is never replaced by a broken one.

use std::fs;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use trillim_core::kernels::{Kernels, WeightType};
use trillim_runtime::convert::{self, Checkpoint};
use trillim_runtime::{Adapter, LoadedModel, LoraQuant};

use crate::hub::human_size;
use crate::store::{valid_component, Store};

/// Convert a Hugging Face checkpoint (safetensors) into a GGUF model in the store.
#[derive(Debug, Clone, clap::Args)]
pub struct QuantizeArgs {
    /// A checkpoint directory (`config.json`, `model.safetensors` or a sharded index,
    /// `tokenizer.json`). With `--adapter` it may instead be a GGUF model (store id or path):
    /// then only the adapter is converted, for that model.
    pub src: String,
    /// Weight type of the projections: f32, f16, bf16, q8_0, q4_0, q4_1, tq1_0, tq2_0, i2_s
    /// [default: tq2_0 for BitNet's ternary checkpoints, q8_0 otherwise].
    #[arg(long = "type", value_name = "TYPE", value_parser = convert::parse_type)]
    pub ty: Option<WeightType>,
    /// Write into this directory instead of the store (`<DIR>/<name>.gguf`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Name of the output: the store id becomes `Local/<NAME>` [default: the checkpoint
    /// directory's name and the type, e.g. `SmolLM2-135M-Instruct-Q8_0`].
    #[arg(long)]
    pub name: Option<String>,
    /// A PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to convert
    /// into llama.cpp's GGUF adapter form, checked against the model (store id
    /// `Local/<adapter directory name>`).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
}

/// `trillim quantize`.
pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let src = PathBuf::from(&args.src);
    let store = Store::from_env();
    let model_path = if src.join("config.json").is_file() {
        Some(convert_model(&args, &src, &store)?)
    } else if args.adapter.is_some() {
        None
    } else if src.is_dir() {
        bail!(
            "{} has no config.json: not a Hugging Face checkpoint directory",
            src.display()
        );
    } else {
        bail!("{} is not a checkpoint directory", src.display());
    };
    if let Some(adapter) = &args.adapter {
        let base = match model_path {
            Some(p) => p,
            None => {
                store
                    .resolve_cli(&args.src)
                    .with_context(|| format!("cannot find the model {}", args.src))?
                    .gguf
            }
        };
        convert_adapter(&args, adapter, &base, &store)?;
    }
    Ok(())
}

/// Where an output goes: `(final directory, file name)`.
fn destination(
    args: &QuantizeArgs,
    store: &Store,
    default_name: &str,
) -> anyhow::Result<(PathBuf, String)> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name.to_string());
    if !valid_component(&name) {
        bail!(
            "invalid name '{name}': use letters, digits, '-', '_' and '.', not starting with '.'"
        );
    }
    Ok(match &args.out {
        Some(dir) => (dir.clone(), format!("{name}.gguf")),
        None => (
            store.root().join("Local").join(&name),
            format!("{name}.gguf"),
        ),
    })
}

/// A directory's last component made into a store name (unusable bytes become `-`).
fn name_of(path: &Path) -> String {
    let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let raw = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    clean.trim_start_matches('.').to_string()
}

fn convert_model(args: &QuantizeArgs, src: &Path, store: &Store) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let ckpt = Checkpoint::open(src)?;
    let info = convert::ModelInfo::from_config(&ckpt.config)?;
    let plan = convert::Plan::new(&ckpt, &info, args.ty)?;
    let ty = plan.ty;
    let default = format!("{}-{}", name_of(src), ty.name().to_ascii_uppercase());
    let (dir, file) = destination(args, store, &default)?;
    eprintln!(
        "Converting {} ({} {}, {} layers) to {} ...",
        src.display(),
        info.arch(),
        human_size(plan.source_bytes),
        info.n_layers,
        ty.name()
    );
    let staged = Staging::new(&dir, args.out.is_none())?;
    let path = staged.path().join(&file);
    let out =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut progress = Progress::new();
    let size = convert::convert(&ckpt, Some(ty), BufWriter::new(&out), &mut |d, t| {
        progress.show(d, t)
    })?;
    progress.finish();
    out.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(out);
    // Loaded back before it takes the place of anything.
    LoadedModel::open(&path, Kernels::scalar())
        .with_context(|| format!("the written model does not load: {}", path.display()))?;
    staged.commit()?;
    let final_path = dir.join(&file);
    eprintln!(
        "Wrote {} ({}) in {:.1} s",
        final_path.display(),
        human_size(size),
        started.elapsed().as_secs_f64()
    );
    if args.out.is_none() {
        println!(
            "Local/{}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
    } else {
        println!("{}", final_path.display());
    }
    Ok(final_path)
}

fn convert_adapter(
    args: &QuantizeArgs,
    adapter: &Path,
    base: &Path,
    store: &Store,
) -> anyhow::Result<()> {
    let model = LoadedModel::open(base, Kernels::scalar())
        .with_context(|| format!("cannot load the base model {}", base.display()))?;
    let a = Adapter::open(adapter, &model, LoraQuant::None)?;
    let default = name_of(adapter);
    let (dir, _) = destination(
        &QuantizeArgs {
            name: None,
            ..args.clone()
        },
        store,
        &default,
    )?;
    if base.parent() == Some(dir.as_path()) {
        bail!(
            "the adapter's output {} would replace its model: rename the adapter directory",
            dir.display()
        );
    }
    let staged = Staging::new(&dir, args.out.is_none())?;
    let path = staged.path().join("adapter.gguf");
    let out =
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let size = a.write_gguf(&model, BufWriter::new(&out))?;
    out.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(out);
    Adapter::open(&path, &model, LoraQuant::None)
        .with_context(|| format!("the written adapter does not load: {}", path.display()))?;
    staged.commit()?;
    eprintln!(
        "Wrote {} ({})",
        dir.join("adapter.gguf").display(),
        human_size(size)
    );
    if args.out.is_none() {
        println!(
            "Local/{}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        );
    } else {
        println!("{}", dir.join("adapter.gguf").display());
    }
    Ok(())
}

/// A hidden staging directory for one output. In the store (`whole`), it sits beside the
/// entry and replaces the entry as a unit on [`Staging::commit`]; with `--out`, it sits inside
/// the named directory and its files replace theirs one by one (each by a rename). Dropped
/// before the commit, it is removed.
struct Staging {
    target: PathBuf,
    stage: PathBuf,
    whole: bool,
    committed: bool,
}

impl Staging {
    fn new(target: &Path, whole: bool) -> anyhow::Result<Staging> {
        let stage = if whole {
            let parent = target.parent().unwrap_or(Path::new("."));
            let name = target
                .file_name()
                .context("the output has no directory name")?
                .to_string_lossy()
                .into_owned();
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            parent.join(format!(".{name}.part-{}", std::process::id()))
        } else {
            fs::create_dir_all(target)
                .with_context(|| format!("cannot create {}", target.display()))?;
            target.join(format!(".trillim-part-{}", std::process::id()))
        };
        if stage.exists() {
            fs::remove_dir_all(&stage)
                .with_context(|| format!("cannot remove {}", stage.display()))?;
        }
        fs::create_dir(&stage).with_context(|| format!("cannot create {}", stage.display()))?;
        Ok(Staging {
            target: target.to_path_buf(),
            stage,
            whole,
            committed: false,
        })
    }

    fn path(&self) -> &Path {
        &self.stage
    }

    /// Moves the staged output into place.
    fn commit(mut self) -> anyhow::Result<()> {
        if !self.whole {
            for e in fs::read_dir(&self.stage)? {
                let e = e?;
                let to = self.target.join(e.file_name());
                fs::rename(e.path(), &to)
                    .with_context(|| format!("cannot move the output to {}", to.display()))?;
            }
            self.committed = true;
            fs::remove_dir(&self.stage).ok();
            return Ok(());
        }
        let old = self
            .stage
            .with_extension(format!("old-{}", std::process::id()));
        let had_old = self.target.exists();
        if had_old {
            fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move {} aside", self.target.display()))?;
        }
        if let Err(e) = fs::rename(&self.stage, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(e)
                .with_context(|| format!("cannot move the output to {}", self.target.display()));
        }
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&old).ok();
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.stage);
        }
    }
}

/// A progress line on stderr: redrawn in place on a terminal, every 10 % otherwise.
struct Progress {
    tty: bool,
    last: u64,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: u64::MAX,
            started: Instant::now(),
        }
    }

    fn show(&mut self, done: u64, total: u64) {
        let pct = (done * 100).checked_div(total).unwrap_or(100).min(100);
        let step = if self.tty { pct } else { pct / 10 * 10 };
        if step == self.last {
            return;
        }
        self.last = step;
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!(
            "  {pct:3}%  {} / {}  {secs:.0} s",
            human_size(done),
            human_size(total)
        );
        let mut e = std::io::stderr();
        if self.tty {
            let _ = write!(e, "\r{line}   ");
        } else {
            let _ = writeln!(e, "{line}");
        }
        let _ = e.flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
