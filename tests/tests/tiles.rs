//! Tiled ternary weights through whole loads: the forward pass over tiles gives the same logits,
//! bit for bit, as over the file's layout; the tile cache is written, reused and rebuilt when
//! stale or damaged.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use trillim_core::kernels::{Kernels, TileKernels};
use trillim_core::Sequential;
use trillim_runtime::{LoadedModel, Session, ThreadPool, TileSource};
use trillim_tests::testdata;

/// Logits of a prompt fed in batches of 7 (multi-token kernels) followed by three tokens fed
/// one at a time (matrix-vector kernels), on `threads` threads.
fn logits(model: &LoadedModel, threads: usize) -> Vec<u32> {
    let prompt: Vec<u32> = (0..40).map(|i| (i * 977 + 13) % 49152).collect();
    let mut s = Session::new(model, 64, 7);
    let pool = ThreadPool::new(threads);
    let mut bits = Vec::new();
    for chunk in prompt.chunks(7) {
        let l = s.feed(model, &pool, chunk, chunk.len()).unwrap();
        bits.extend(l.iter().map(|v| v.to_bits()));
    }
    for t in [5u32, 77, 1234] {
        let l = s.feed(model, &Sequential, &[t], 1).unwrap();
        bits.extend(l.iter().map(|v| v.to_bits()));
    }
    bits
}

/// The kernel tables to test: the scalar reference with the scalar tile kernels, and the
/// running CPU's best table if it has tile kernels of its own.
fn tables() -> Vec<Kernels> {
    let mut v = vec![Kernels {
        ternary_tiles: Some(TileKernels::scalar()),
        ..Kernels::scalar()
    }];
    let best = trillim_runtime::cpu::best_kernels();
    if best.ternary_tiles.is_some() {
        v.push(best);
    }
    v
}

/// `path` loaded with `k` minus its tile kernels: the file's layout.
fn open_untiled(path: &Path, k: Kernels) -> LoadedModel {
    let k = Kernels {
        ternary_tiles: None,
        ..k
    };
    LoadedModel::open(path, k).unwrap()
}

fn cache_file(source: &TileSource) -> PathBuf {
    match source {
        TileSource::Built { cache: Ok(p), .. } | TileSource::Cached(p) => p.clone(),
        other => panic!("no cache file: {other:?}"),
    }
}

fn copy_model(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::copy(testdata(&format!("models/{name}")), &path).unwrap();
    path
}

/// The ternary fixtures: TQ1_0, TQ2_0 and I2_S projections.
const MODELS: [&str; 3] = [
    "tiny-bitnet-tq1_0.gguf",
    "tiny-bitnet-tq2_0.gguf",
    "tiny-b158-i2_s.gguf",
];

#[test]
fn tiled_loads_match_the_file_layout_and_reuse_their_cache() {
    let home = std::env::temp_dir().join(format!("trillim-tiles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    // This test binary's only test sets the variable, so no other test sees it change.
    std::env::set_var("TRILLIM_HOME", &home);
    for (name, k) in MODELS
        .iter()
        .flat_map(|m| tables().into_iter().map(move |k| (m, k)))
    {
        let path = copy_model(&home.join("models"), name);
        let plain = open_untiled(&path, k);
        assert_eq!(plain.tile_source, TileSource::None);
        assert!(!plain.recompiled);
        let want = logits(&plain, 2);

        let layout = k.ternary_tiles.expect("tile kernels").layout;
        if !layout.can_tile(plain.weights.layers[0].q.ty) {
            // This table's layout keeps the model's format as it is.
            let kept = LoadedModel::open(&path, k).unwrap();
            assert_eq!(kept.tile_source, TileSource::None, "{name} {}", k.name);
            continue;
        }
        let built = LoadedModel::open(&path, k).unwrap();
        assert!(
            matches!(built.tile_source, TileSource::Built { cache: Ok(_), .. }),
            "{:?}",
            built.tile_source
        );
        assert!(!built.recompiled, "tiles are not a requested re-encoding");
        let file = cache_file(&built.tile_source);
        assert!(file.starts_with(home.join("cache")), "{}", file.display());
        for threads in [1, 2, 3] {
            assert!(
                logits(&built, threads) == want,
                "{} tiled, {threads} threads",
                k.name
            );
        }
        drop(built);

        let cached = LoadedModel::open(&path, k).unwrap();
        assert_eq!(cached.tile_source, TileSource::Cached(file.clone()));
        assert!(!cached.recompiled);
        assert!(logits(&cached, 2) == want, "{name} {} from cache", k.name);
        drop(cached);

        // A truncated cache file is rebuilt, never read.
        let len = std::fs::metadata(&file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let rebuilt = LoadedModel::open(&path, k).unwrap();
        assert!(matches!(
            rebuilt.tile_source,
            TileSource::Built { cache: Ok(_), .. }
        ));
        assert!(logits(&rebuilt, 2) == want);
        drop(rebuilt);

        // A model of the same shape, size and modification time but other weights (a copy
        // that kept its timestamp) does not match either.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let at = plain.weights.layers[0].q.offset;
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] = if bytes[at] == 0x55 { 0x00 } else { 0x55 };
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        let other = LoadedModel::open(&path, k).unwrap();
        assert!(
            matches!(other.tile_source, TileSource::Built { .. }),
            "{name}: {:?}",
            other.tile_source
        );
        drop(other);

        // A model file rewritten since (new modification time) makes the cache stale.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let now = std::time::SystemTime::now();
        f.set_modified(now + std::time::Duration::from_secs(3600))
            .unwrap();
        drop(f);
        let stale = LoadedModel::open(&path, k).unwrap();
        assert!(matches!(stale.tile_source, TileSource::Built { .. }));
        drop(stale);
        assert!(matches!(
            LoadedModel::open(&path, k).unwrap().tile_source,
            TileSource::Cached(_)
        ));
        std::fs::remove_file(&file).unwrap();
    }

    // An unwritable cache directory leaves the tiles in memory, still correct.
    let blocked = home.join("blocked");
    std::fs::write(&blocked, b"not a directory").unwrap();
    std::env::set_var("TRILLIM_HOME", &blocked);
    let k = tables()[0];
    let path = copy_model(&home.join("models"), MODELS[0]);
    let m = LoadedModel::open(&path, k).unwrap();
    assert!(
        matches!(m.tile_source, TileSource::Built { cache: Err(_), .. }),
        "{:?}",
        m.tile_source
    );
    let plain = open_untiled(&path, k);
    assert!(logits(&m, 2) == logits(&plain, 2));
    let _ = std::fs::remove_dir_all(&home);
}
