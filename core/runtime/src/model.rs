//! Loading a model file (memory-mapped) and running sessions over it.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use trillim_core::format::gguf::Gguf;
use trillim_core::kernels::formats::{dequantize_row, quantize_row_q4_0, quantize_row_q8_0};
use trillim_core::kernels::Kernels;
use trillim_core::kernels::WeightType;
use trillim_core::model::{
    Buffers, Config, Forward, KvCache, ModelError, Scratch, ScratchSizes, SeqToken, Storage,
    Tensor, Weights, MAX_SLOTS,
};
use trillim_core::Parallel;

use crate::tiles::{self, TileBytes, TileSource};

/// Why a model could not be loaded.
///
/// The message names the file and the cause, once each. The cause is part of the message and
/// deliberately not also returned by `source()`, so printing the error chain (anyhow's `{:#}`)
/// does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or mapped.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not a model this build can run.
    #[error("{}: {cause}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: ModelError,
    },
}

/// Maps a model file read-only, so the shells that inspect model files need no `unsafe`.
///
/// As with every memory-mapped model loader, the file must not be truncated or rewritten
/// while it is mapped; the model store only ever replaces files by renaming new ones into
/// place. A file changed underneath anyway can at worst show the GGUF reader inconsistent
/// bytes, which it bounds-checks.
pub fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process; the file is not modified
    // while mapped (see above).
    unsafe { Mmap::map(file) }
}

/// Re-encodings of the output (unembedding) matrix that a load can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnembedQuant {
    /// 8-bit blocks of 32 (about 1.06 bytes per weight).
    Q8_0,
    /// 4-bit blocks of 32 (about 0.56 bytes per weight): less memory traffic per token.
    Q4_0,
}

impl UnembedQuant {
    /// Parses a level name. `q6_k` and `int8` are recognised but not available in this build.
    pub fn parse(name: &str) -> Result<UnembedQuant, String> {
        match name {
            "q8_0" => Ok(UnembedQuant::Q8_0),
            "q4_0" => Ok(UnembedQuant::Q4_0),
            "q6_k" | "int8" => Err(format!(
                "unembed_quant '{name}' is not available in this build (available: q8_0, q4_0)"
            )),
            other => Err(format!(
                "unknown unembed_quant '{other}' (expected one of: q8_0, q4_0, q6_k, int8)"
            )),
        }
    }

    fn weight_type(self) -> WeightType {
        match self {
            UnembedQuant::Q8_0 => WeightType::Q8_0,
            UnembedQuant::Q4_0 => WeightType::Q4_0,
        }
    }
}

/// Options of a model load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Re-encode the output matrix at load.
    pub unembed_quant: Option<UnembedQuant>,
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// A model file mapped into memory with its validated configuration and weight layout.
pub struct LoadedModel {
    bytes: Bytes,
    /// Hyper-parameters.
    pub config: Config,
    /// Weight layout.
    pub weights: Box<Weights>,
    /// Kernels used for every projection.
    pub kernels: Kernels,
    /// Where the model was loaded from.
    pub path: PathBuf,
    /// Weights re-encoded at load (see [`LoadOptions`]).
    aux: Vec<u8>,
    /// Ternary weights repacked into tiles (see [`crate::tiles`]).
    tiles: TileBytes,
    /// Where the tiled weights came from.
    pub tile_source: TileSource,
    /// Bytes of the file's weights that the tiles replace (never read after the load).
    tiled_file_bytes: usize,
    /// True when the load re-encoded a matrix as its options asked (tiles, a transparent
    /// cache of the same weights, do not count).
    pub recompiled: bool,
    /// The LoRA adapter applied to its projections, if any.
    adapter: Option<crate::lora::Adapter>,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish()
    }
}

impl LoadedModel {
    /// Maps `path` (zero-copy) and validates it as a model.
    pub fn open(path: &Path, kernels: Kernels) -> Result<LoadedModel, LoadError> {
        Self::open_with(path, kernels, LoadOptions::default())
    }

    /// Maps `path` and applies `opts`.
    pub fn open_with(
        path: &Path,
        kernels: Kernels,
        opts: LoadOptions,
    ) -> Result<LoadedModel, LoadError> {
        let mut m = Self::open_plain(path, kernels)?;
        if let Some(q) = opts.unembed_quant {
            m.requantize_output(q.weight_type());
        }
        Ok(m)
    }

    fn open_plain(path: &Path, kernels: Kernels) -> Result<LoadedModel, LoadError> {
        let io = |cause| LoadError::Io {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(io)?;
        let map = map_file(&file).map_err(io)?;
        Self::from_bytes(Bytes::Mapped(map), path, true, kernels)
    }

    /// Validates model bytes held in memory (tests, fuzzing, embedded use).
    pub fn from_vec(
        bytes: Vec<u8>,
        name: &Path,
        kernels: Kernels,
    ) -> Result<LoadedModel, LoadError> {
        Self::from_bytes(Bytes::Owned(bytes), name, false, kernels)
    }

    /// Validates `bytes` and tiles its ternary weights if `kernels` has tile kernels (cached
    /// beside other loads of `path` when `on_disk`).
    fn from_bytes(
        bytes: Bytes,
        path: &Path,
        on_disk: bool,
        kernels: Kernels,
    ) -> Result<LoadedModel, LoadError> {
        let err = |cause| LoadError::Model {
            path: path.to_path_buf(),
            cause,
        };
        let data: &[u8] = match &bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        };
        let g = Gguf::parse(data).map_err(|e| err(e.into()))?;
        let config = Config::from_gguf(&g).map_err(err)?;
        let mut weights = Box::new(Weights::from_gguf(&g, &config).map_err(err)?);
        let t = if let Some(tk) = kernels.ternary_tiles {
            let cache = tiles::cache_dir().filter(|_| on_disk);
            let model = Some(path).filter(|_| on_disk);
            let mut release = |sources: &[(usize, usize)]| {
                if let Bytes::Mapped(m) = &bytes {
                    for &(off, len) in sources {
                        // SAFETY: the mapping is read-only and the file is never changed in
                        // place, so dropping its pages only makes a later read fault them back
                        // in from the page cache (the range is widened to whole pages, which
                        // may touch a neighbouring tensor: it faults back in the same way);
                        // nothing reads these ranges again (their tensors now point at the
                        // tiles).
                        let _ = unsafe {
                            m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, off, len)
                        };
                    }
                }
            };
            tiles::tile(
                data,
                model,
                &mut weights,
                (cache.as_deref(), tk.layout),
                &mut release,
            )
        } else {
            tiles::Tiled {
                bytes: TileBytes::Empty,
                source: TileSource::None,
                replaced: 0,
            }
        };
        Ok(LoadedModel {
            bytes,
            config,
            weights,
            kernels,
            path: path.to_path_buf(),
            aux: Vec::new(),
            tiles: t.bytes,
            tile_source: t.source,
            tiled_file_bytes: t.replaced,
            recompiled: false,
            adapter: None,
        })
    }

    /// Re-encodes the output matrix as `ty` into the auxiliary buffer (no-op if it already is).
    fn requantize_output(&mut self, ty: WeightType) {
        let out = self.weights.output;
        if out.ty == ty {
            return;
        }
        let cols = out.cols;
        let row_bytes = ty.row_bytes(cols).expect("output rows are whole 32-blocks");
        let mut aux = vec![0u8; row_bytes * out.rows];
        let mut row = vec![0f32; cols];
        let src = out.data(&self.buffers());
        for (r, dst) in aux.chunks_exact_mut(row_bytes).enumerate() {
            let s = &src[r * out.row_bytes()..(r + 1) * out.row_bytes()];
            dequantize_row(out.ty, s, &mut row, out.scale);
            match ty {
                WeightType::Q4_0 => quantize_row_q4_0(&row, dst),
                _ => quantize_row_q8_0(&row, dst),
            }
        }
        self.weights.output = Tensor {
            offset: 0,
            len: aux.len(),
            ty,
            rows: out.rows,
            cols,
            scale: 1.0,
            storage: Storage::Aux,
        };
        self.aux = aux;
        self.recompiled = true;
    }

    /// The model file's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// Bytes of weights the model keeps in memory when every page has been read: the file,
    /// less the tensors that were tiled, plus re-encoded and tiled weights.
    pub fn weight_memory_bytes(&self) -> usize {
        // Saturating: a crafted file could let tensors share bytes.
        self.bytes().len().saturating_sub(self.tiled_file_bytes)
            + self.aux.len()
            + self.tiles.bytes().len()
    }

    /// The buffers the weights point into.
    pub fn buffers(&self) -> Buffers<'_> {
        Buffers {
            file: self.bytes(),
            aux: &self.aux,
            tiles: self.tiles.bytes(),
        }
    }

    /// The parsed GGUF header (re-walked on each call; cheap next to inference).
    pub fn gguf(&self) -> Gguf<'_> {
        Gguf::parse(self.bytes()).expect("validated at load")
    }

    /// The forward pass over this model.
    pub fn forward(&self) -> Forward<'_> {
        Forward {
            config: &self.config,
            weights: &self.weights,
            bufs: self.buffers(),
            kernels: &self.kernels,
            lora: self.adapter.as_ref().map(crate::lora::Adapter::view),
        }
    }

    /// Applies `adapter` (checked against this model by [`crate::lora::Adapter::open`]) from
    /// now on, replacing any other; `None` removes it.
    pub fn set_adapter(&mut self, adapter: Option<crate::lora::Adapter>) {
        self.adapter = adapter;
    }

    /// The adapter applied, if any.
    pub fn adapter(&self) -> Option<&crate::lora::Adapter> {
        self.adapter.as_ref()
    }

    /// Bytes of KV cache one position takes.
    pub fn kv_bytes_per_pos(&self) -> usize {
        self.config.kv_elems_per_pos() * 2
    }

    /// The context size to use when none is given: the model's training context, capped so the
    /// KV cache takes at most a quarter of the memory available now.
    pub fn default_ctx(&self) -> usize {
        self.default_ctx_for(1)
    }

    /// The context size per sequence when `slots` sequences share that quarter of memory.
    pub fn default_ctx_for(&self, slots: usize) -> usize {
        let budget = available_memory().map(|m| m / 4).unwrap_or(1 << 30) / slots.max(1);
        let by_mem = (budget / self.kv_bytes_per_pos().max(1)).max(256);
        self.config.default_ctx().min(by_mem)
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (Linux), else `None`.
pub fn available_memory() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The state of one or more sequences: a KV cache with a slot per sequence, working memory,
/// and the tokens each sequence has consumed. The methods without a slot work on slot 0.
#[derive(Debug)]
pub struct Session {
    kv: Vec<u16>,
    capacity: usize,
    f32s: Vec<f32>,
    i8s: Vec<i8>,
    i32s: Vec<i32>,
    max_batch: usize,
    tokens: Vec<Vec<u32>>,
    logits: Vec<f32>,
}

impl Session {
    /// A session for `model` holding one sequence of up to `ctx` positions, processing prompts
    /// in batches of `max_batch` tokens. All memory is allocated here, once.
    pub fn new(model: &LoadedModel, ctx: usize, max_batch: usize) -> Session {
        Self::with_slots(model, ctx, max_batch, 1)
    }

    /// A session holding `slots` sequences (at most [`MAX_SLOTS`]) of up to `ctx` positions
    /// each.
    pub fn with_slots(model: &LoadedModel, ctx: usize, max_batch: usize, slots: usize) -> Session {
        let c = &model.config;
        let slots = slots.clamp(1, MAX_SLOTS);
        let sz = ScratchSizes::new(c, max_batch);
        Session {
            kv: vec![0; KvCache::elems(c, ctx) * slots],
            capacity: ctx,
            f32s: vec![0.0; sz.f32s],
            i8s: vec![0; sz.i8s],
            i32s: vec![0; sz.i32s],
            max_batch: sz.max_batch,
            tokens: (0..slots).map(|_| Vec::with_capacity(ctx)).collect(),
            logits: Vec::new(),
        }
    }

    /// Sequences held.
    pub fn slots(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens consumed so far by slot 0 (their keys and values are cached).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[0]
    }

    /// Tokens consumed so far by `slot`.
    pub fn slot_tokens(&self, slot: usize) -> &[u32] {
        self.tokens.get(slot).map_or(&[], |t| t)
    }

    /// Positions each sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of memory the session holds (KV cache, scratch, logits).
    pub fn memory_bytes(&self) -> usize {
        self.kv.len() * 2
            + self.f32s.len() * 4
            + self.i8s.len()
            + self.i32s.len() * 4
            + self.logits.capacity() * 4
    }

    /// Forgets every token of slot 0 after the first `n`.
    pub fn rewind(&mut self, n: usize) {
        self.rewind_slot(0, n);
    }

    /// Forgets every token of `slot` after the first `n`.
    pub fn rewind_slot(&mut self, slot: usize, n: usize) {
        if let Some(t) = self.tokens.get_mut(slot) {
            t.truncate(n);
        }
    }

    /// Keeps slot 0's longest prefix shared with `prompt` (see [`Session::reuse_prefix_slot`]).
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        self.reuse_prefix_slot(0, prompt)
    }

    /// Tokens `slot` shares with the start of `prompt`.
    pub fn common_prefix(&self, slot: usize, prompt: &[u32]) -> usize {
        self.slot_tokens(slot)
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Keeps the longest prefix `slot` shares with `prompt` (leaving at least one prompt
    /// token to feed, so its logits can be computed) and returns its length.
    pub fn reuse_prefix_slot(&mut self, slot: usize, prompt: &[u32]) -> usize {
        let keep = self
            .common_prefix(slot, prompt)
            .min(prompt.len().saturating_sub(1));
        self.rewind_slot(slot, keep);
        keep
    }

    fn cache(&mut self, c: &Config) -> Result<(KvCache<'_>, Scratch<'_>), ModelError> {
        let scratch = Scratch::new(
            c,
            self.max_batch,
            &mut self.f32s,
            &mut self.i8s,
            &mut self.i32s,
        )?;
        let mut kv = KvCache::with_slots(c, &mut self.kv, self.capacity, self.tokens.len())?;
        for (slot, t) in self.tokens.iter().enumerate() {
            kv.set_slot_len(slot, t.len());
        }
        Ok((kv, scratch))
    }

    /// Feeds `tokens` to slot 0 and returns the logits after each of the last `n_logits` of
    /// them (row-major, `n_logits × n_vocab`). On error nothing is appended.
    pub fn feed(
        &mut self,
        model: &LoadedModel,
        par: &dyn Parallel,
        tokens: &[u32],
        n_logits: usize,
    ) -> Result<&mut [f32], ModelError> {
        let c = &model.config;
        let n_logits = n_logits.min(tokens.len());
        let mut logits = std::mem::take(&mut self.logits);
        logits.resize(n_logits * c.n_vocab, 0.0);
        let r = self.cache(c).and_then(|(mut kv, mut scratch)| {
            model
                .forward()
                .run(tokens, &mut kv, &mut scratch, par, &mut logits)
        });
        self.logits = logits;
        r?;
        self.tokens[0].extend_from_slice(tokens);
        Ok(&mut self.logits)
    }

    /// Feeds a batch whose tokens extend several slots (see [`Forward::run_seqs`]) and returns
    /// one row of logits per token that asked for them, in batch order. On error nothing is
    /// appended.
    pub fn feed_seqs(
        &mut self,
        model: &LoadedModel,
        par: &dyn Parallel,
        tokens: &[SeqToken],
    ) -> Result<&mut [f32], ModelError> {
        let mut logits = std::mem::take(&mut self.logits);
        let r = self.feed_seqs_into(model, par, tokens, &mut logits);
        self.logits = logits;
        r?;
        Ok(&mut self.logits)
    }

    /// [`Session::feed_seqs`] writing the logits into the caller's buffer (resized to one row
    /// per token that asked for them), so the caller can read them while it reads the slots'
    /// tokens.
    pub fn feed_seqs_into(
        &mut self,
        model: &LoadedModel,
        par: &dyn Parallel,
        tokens: &[SeqToken],
        logits: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let c = &model.config;
        let rows = tokens.iter().filter(|t| t.logits).count();
        logits.resize(rows * c.n_vocab, 0.0);
        self.cache(c).and_then(|(mut kv, mut scratch)| {
            model
                .forward()
                .run_seqs(tokens, &mut kv, &mut scratch, par, logits)
        })?;
        for t in tokens {
            self.tokens[t.slot as usize].push(t.token);
        }
        Ok(())
    }
}
