//! Quick benchmark of a model file: `cargo run --release -p trillim-runtime --example bench -- MODEL [THREADS]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: bench MODEL [THREADS] [PROMPT] [GEN]");
    let threads: usize = args
        .next()
        .map(|s| s.parse().expect("threads"))
        .unwrap_or(2);
    let prompt: usize = args
        .next()
        .map(|s| s.parse().expect("prompt"))
        .unwrap_or(128);
    let gen: usize = args.next().map(|s| s.parse().expect("gen")).unwrap_or(32);
    let kernels = trillim_runtime::cpu::best_kernels();
    let model =
        trillim_runtime::LoadedModel::open(std::path::Path::new(&path), kernels).expect("load");
    let pool = trillim_runtime::ThreadPool::new(threads);
    let opts = trillim_runtime::bench::BenchOptions {
        prompt_tokens: prompt,
        gen_tokens: gen,
        runs: 3,
        batch: 64,
    };
    let r = trillim_runtime::bench::run(&model, &pool, opts).expect("bench");
    println!("{}", r.to_json());
}
