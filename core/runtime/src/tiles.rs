//! Tiled ternary weights: built at the first load of a model, kept in a cache file so later
//! loads are a plain memory map.
//!
//! When the kernel table has tile kernels (see [`trillim_kernels::ternary_tiles`]), every
//! projection their layout takes and whose shape tiles is repacked once: TQ1_0, TQ2_0 and I2_S
//! into 16-row tiles on the AVX-512 VBMI path, TQ1_0 into TQ2_0 blocks on the others. The
//! result goes to `$TRILLIM_HOME/cache/<model>-<path hash>[.tq2].tiles` (default
//! `~/.trillim/cache`), with a header naming the layout, the model file's size and
//! modification time, the layout version and a hash
//! of the tensor table and of bytes sampled from every tiled tensor; a later load that finds a
//! matching file maps it instead of repacking. A stale, truncated or foreign
//! file is rebuilt; a cache directory that cannot be written leaves the tiles in memory.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, UNIX_EPOCH};

use memmap2::Mmap;
use trillim_core::kernels::ternary_tiles::TileLayout;
use trillim_core::model::{Storage, Tensor, Weights};

/// Layout version written into cache files; bump it when the tiled layout changes.
const VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"TRLMTQ1T";
const HEADER: usize = 64;
/// Words of each tiled tensor's bytes that the cache key samples.
const SAMPLES: usize = 9;

/// Where a load's tiled weights came from.
#[derive(Clone, Debug, PartialEq)]
pub enum TileSource {
    /// Nothing was tiled: no ternary projections, or kernels without tile kernels.
    None,
    /// The model's ternary projections could not be tiled (e.g. a 2-bit code outside the
    /// ternary range); it runs on the file's layout.
    Unsupported(String),
    /// Mapped from a cache file written by an earlier load.
    Cached(PathBuf),
    /// Repacked at this load, in `ms` milliseconds.
    Built {
        /// Time the repack took.
        ms: f64,
        /// The cache file written, or why none could be.
        cache: Result<PathBuf, String>,
    },
}

impl std::fmt::Display for TileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileSource::None => write!(f, "none"),
            TileSource::Unsupported(why) => write!(f, "not used: {why}"),
            TileSource::Cached(p) => write!(f, "mapped from {}", p.display()),
            TileSource::Built { ms, cache: Ok(p) } => {
                write!(f, "built in {ms:.0} ms, cached at {}", p.display())
            }
            TileSource::Built { ms, cache: Err(e) } => {
                write!(
                    f,
                    "built in {ms:.0} ms, kept in memory (cache not written: {e})"
                )
            }
        }
    }
}

impl TileSource {
    /// One word for reports: `none`, `cached` or `built`.
    pub fn kind(&self) -> &'static str {
        match self {
            TileSource::None | TileSource::Unsupported(_) => "none",
            TileSource::Cached(_) => "cached",
            TileSource::Built { .. } => "built",
        }
    }
}

/// The bytes of the tiled weights.
pub(crate) enum TileBytes {
    Empty,
    Owned(Vec<u8>),
    Mapped(Mmap),
}

impl TileBytes {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            TileBytes::Empty => &[],
            TileBytes::Owned(v) => v,
            TileBytes::Mapped(m) => &m[HEADER..],
        }
    }
}

/// The directory tile caches go to: `$TRILLIM_HOME/cache`, else `~/.trillim/cache`.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("TRILLIM_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h).join("cache"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".trillim").join("cache"))
}

/// Number and total size of the tile cache files in `dir` (temporary ones included).
pub fn cache_usage(dir: &Path) -> (usize, u64) {
    let Ok(rd) = fs::read_dir(dir) else {
        return (0, 0);
    };
    rd.flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".tiles") || name.contains(".tmp.")
        })
        .filter_map(|e| e.metadata().ok())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// The projections to tile, each with its offset in the tile buffer; and the buffer's length.
fn plan(weights: &Weights, layout: TileLayout) -> (Vec<(usize, usize, usize)>, usize) {
    let mut list = Vec::new();
    let mut total = 0;
    for (li, l) in weights.layers.iter().enumerate() {
        for (pi, t) in l.projections().into_iter().enumerate() {
            if !layout.can_tile(t.ty) || t.storage != Storage::File {
                continue;
            }
            if let Some(n) = layout.tiled_bytes(t.rows, t.cols) {
                list.push((li * 7 + pi, total, n));
                total += n;
            }
        }
    }
    (list, total)
}

/// Projection `slot % 7` (see [`Layer::projections`]) of layer `slot / 7`.
///
/// [`Layer::projections`]: trillim_core::model::Layer::projections
fn proj(weights: &Weights, slot: usize) -> &Tensor {
    weights.layers[slot / 7].projections()[slot % 7]
}

/// FNV-1a over `words`.
fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// What a cache file must record to match the model file and the plan.
#[derive(Debug, PartialEq)]
struct Key {
    layout: TileLayout,
    source_len: u64,
    mtime_s: u64,
    mtime_ns: u32,
    table: u64,
    payload: u64,
}

impl Key {
    fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        // 0 for the 16-row tiles, whose files predate the field.
        h[12] = match self.layout {
            TileLayout::Tiles16 => 0,
            TileLayout::Tq2Rows => 1,
        };
        h[16..24].copy_from_slice(&self.source_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.mtime_s.to_le_bytes());
        h[32..36].copy_from_slice(&self.mtime_ns.to_le_bytes());
        h[40..48].copy_from_slice(&self.table.to_le_bytes());
        h[48..56].copy_from_slice(&self.payload.to_le_bytes());
        h
    }
}

/// The cache file for `model` and what it must hold, or `None` if the file's identity is
/// unknown (no metadata).
fn cache_key(
    model: &Path,
    file: &[u8],
    weights: &Weights,
    (list, total): (&[(usize, usize, usize)], usize),
    layout: TileLayout,
) -> Option<(String, Key)> {
    let meta = fs::metadata(model).ok()?;
    let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    let canon = fs::canonicalize(model).ok()?;
    let path_hash = fnv(canon
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|&b| b as u64));
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let source = File::open(model).ok()?;
    let mut words = Vec::new();
    for &(slot, off, len) in list {
        let t = proj(weights, slot);
        words.extend([
            slot as u64,
            t.offset as u64,
            t.rows as u64,
            t.cols as u64,
            off as u64,
            len as u64,
        ]);
        // A few bytes from across the tensor, so that a different model of the same shape,
        // size and modification time (a copy that kept its timestamp) does not match.
        for i in 0..SAMPLES {
            let at = t.offset + (t.len - 8) * i / (SAMPLES - 1);
            words.push(sample(&source, file, at)?);
        }
    }
    let key = Key {
        layout,
        source_len: meta.len(),
        mtime_s: mtime.as_secs(),
        mtime_ns: mtime.subsec_nanos(),
        table: fnv(words),
        payload: total as u64,
    };
    let kind = match layout {
        TileLayout::Tiles16 => String::new(),
        other => format!(".{}", other.name()),
    };
    Some((format!("{stem}-{path_hash:016x}{kind}.tiles"), key))
}

/// The 8 bytes at `at` of the model file, read through the file rather than the memory map:
/// touching the map would fault in (and keep resident) a neighbourhood of pages of tensors
/// that are never read again once tiled, about 120 MiB for a 2B4T model.
fn sample(source: &File, file: &[u8], at: usize) -> Option<u64> {
    let mut b = [0u8; 8];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let _ = file;
        source.read_exact_at(&mut b, at as u64).ok()?;
    }
    #[cfg(not(unix))]
    {
        let _ = source;
        b.copy_from_slice(file.get(at..at + 8)?);
    }
    Some(u64::from_le_bytes(b))
}

/// Maps `path` if it is a cache file matching `key`.
fn open_cached(path: &Path, key: &Key) -> Option<Mmap> {
    let f = File::open(path).ok()?;
    if f.metadata().ok()?.len() != HEADER as u64 + key.payload {
        return None;
    }
    // SAFETY: read-only mapping of a cache file that is only ever replaced by rename, never
    // rewritten in place; its length was just checked. Every page of it is read by the first
    // token, so it is mapped in up front (from the page cache, in well under a second for a
    // 2B-parameter model) rather than fault by fault during the first request.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&f) }.ok()?;
    (map.len() == HEADER + key.payload as usize && map[..HEADER] == key.header()).then_some(map)
}

/// Removes temporary files of `path` left by a writer that died: any older than an hour (a
/// live writer finishes in seconds).
fn remove_abandoned(dir: &Path, path: &Path) {
    let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!("{stem}.tmp.");
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if old && e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Writes `tiles` with `key`'s header to `path` (through a temporary file and a rename, so a
/// concurrent load never sees a partial file).
fn write_cache(path: &Path, key: &Key, tiles: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        remove_abandoned(dir, path);
    }
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&key.header())?;
        f.write_all(tiles)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Repacks every planned tensor from `file` into one buffer, on all cores.
fn build(
    file: &[u8],
    weights: &Weights,
    (list, total): (&[(usize, usize, usize)], usize),
    layout: TileLayout,
) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; total];
    // Jobs of up to 64 tiles, so tensors of any size spread over the threads.
    let mut jobs = Vec::new();
    let mut rest: &mut [u8] = &mut out;
    for &(slot, _, len) in list {
        let t = proj(weights, slot);
        let (mine, tail) = rest.split_at_mut(len);
        rest = tail;
        let src = t.data(&trillim_core::model::Buffers::file(file));
        let src_tile = 16 * t.row_bytes();
        let dst_tile = len / (t.rows / 16);
        for (i, dst) in mine.chunks_mut(64 * dst_tile).enumerate() {
            let first = i * 64 * src_tile;
            let n = dst.len() / dst_tile;
            jobs.push((t, &src[first..first + n * src_tile], 16 * n, dst));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    let jobs = std::sync::Mutex::new(jobs);
    let failed = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some((t, src, rows, dst)) = job else {
                    break;
                };
                if let Err(e) = layout.repack(t.ty, src, rows, t.cols, dst) {
                    *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    break;
                }
            });
        }
    });
    drop(jobs);
    match failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(format!("{e:?}")),
        None => Ok(out),
    }
}

/// Told the file ranges (offset, length) of the tensors a build has read.
pub(crate) type SourcesRead<'a> = dyn FnMut(&[(usize, usize)]) + 'a;

/// What [`tile`] did.
pub(crate) struct Tiled {
    /// The tiled weights (empty if nothing was tiled).
    pub(crate) bytes: TileBytes,
    /// Where they came from.
    pub(crate) source: TileSource,
    /// Bytes of the file's tensors they replace (0 if nothing was tiled).
    pub(crate) replaced: usize,
}

/// Tiles `weights`' ternary projections (pointing them at the returned buffer), from the cache
/// for `model` when it matches. `cache` is the cache directory (`None`: keep tiles in memory).
/// `built` gets the file ranges (offset, length) of the source tensors once a build has read
/// them, to release their pages before the tiles are mapped (keeping a first load's peak
/// memory down).
pub(crate) fn tile(
    file: &[u8],
    model: Option<&Path>,
    weights: &mut Weights,
    (cache, layout): (Option<&Path>, TileLayout),
    built: &mut SourcesRead<'_>,
) -> Tiled {
    let (list, total) = plan(weights, layout);
    let untiled = |source| Tiled {
        bytes: TileBytes::Empty,
        source,
        replaced: 0,
    };
    if list.is_empty() {
        return untiled(TileSource::None);
    }
    let sources: Vec<(usize, usize)> = list
        .iter()
        .map(|&(slot, _, _)| (proj(weights, slot).offset, proj(weights, slot).len))
        .collect();
    let tiled = |bytes, source| Tiled {
        bytes,
        source,
        replaced: sources.iter().map(|s| s.1).sum(),
    };
    let key = model.zip(cache).and_then(|(m, dir)| {
        cache_key(m, file, weights, (&list, total), layout).map(|(name, key)| (dir.join(name), key))
    });
    let point = |weights: &mut Weights| {
        for &(slot, off, len) in &list {
            let ps = weights.layers[slot / 7].projections_mut();
            let t = &mut *ps[slot % 7];
            t.offset = off;
            t.len = len;
            t.storage = Storage::Tiles;
        }
    };
    if let Some((path, key)) = &key {
        if let Some(map) = open_cached(path, key) {
            point(weights);
            return tiled(TileBytes::Mapped(map), TileSource::Cached(path.clone()));
        }
    }
    let t0 = Instant::now();
    let tiles = match build(file, weights, (&list, total), layout) {
        Ok(t) => t,
        Err(why) => return untiled(TileSource::Unsupported(why)),
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    built(&sources);
    let (bytes, cache) = match &key {
        None => (
            TileBytes::Owned(tiles),
            Err("no cache directory or model path".to_string()),
        ),
        Some((path, key)) => match write_cache(path, key, &tiles) {
            Ok(()) => {
                // Map the file in place of the buffer (page cache, not anonymous memory);
                // drop the buffer first so the two are never resident together.
                drop(tiles);
                match open_cached(path, key) {
                    Some(map) => (TileBytes::Mapped(map), Ok(path.clone())),
                    // Replaced or removed in between by someone else: build again.
                    None => match build(file, weights, (&list, total), layout) {
                        Ok(t) => (
                            TileBytes::Owned(t),
                            Err(format!("{}: changed while being mapped", path.display())),
                        ),
                        Err(why) => return untiled(TileSource::Unsupported(why)),
                    },
                }
            }
            Err(e) => (
                TileBytes::Owned(tiles),
                Err(format!("{}: {e}", path.display())),
            ),
        },
    };
    point(weights);
    tiled(bytes, TileSource::Built { ms, cache })
}
