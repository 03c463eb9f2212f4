//! `trillim`: run ternary (BitNet) and Llama-family GGUF models on CPUs, from the command line
//! or behind an OpenAI-compatible HTTP API.
#![forbid(unsafe_code)]

mod bench;
mod cli;
mod cpu;
mod engines;
mod harness;
mod http;
mod hub;
mod metrics;
mod openai;
mod quantize;
mod registry;
mod state;
mod store;
mod template;
mod tok;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "trillim",
    version,
    about = "Run ternary and Llama-family models on CPUs",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the OpenAI-compatible HTTP server.
    Serve(cli::ServeArgs),
    /// Chat with a model in the terminal.
    Chat(cli::ChatArgs),
    /// Generate text from a prompt and stream it to stdout.
    Generate(cli::GenerateArgs),
    /// Download a GGUF model from the Hugging Face Hub into the local store.
    Pull(store::cli::PullArgs),
    /// List the models in the local store.
    List(store::cli::ListArgs),
    /// Search the Hugging Face Hub for GGUF models.
    Models(store::cli::ModelsArgs),
    /// Check this machine: version, CPU features and kernels, memory, the model store.
    Doctor(cli::DoctorArgs),
    /// Transcribe an audio file with Whisper.
    Transcribe(engines::stt::cli::TranscribeArgs),
    /// Speak a text with pocket-tts into a WAV file.
    Speak(engines::tts::cli::SpeakArgs),
    /// Measure prefill and decode speed, time to first token, memory and bandwidth.
    Bench(bench::BenchArgs),
    /// Run a web search and print the message the search harness would give the model.
    Search(harness::cli::SearchArgs),
    /// Convert a Hugging Face checkpoint (or a PEFT adapter) into GGUF, into the store.
    Quantize(quantize::QuantizeArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; usage errors exit 1 (clap's default is 2).
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let result = match cli.command {
        Command::Serve(a) => cli::serve(a),
        Command::Chat(a) => cli::chat(a),
        Command::Generate(a) => cli::generate(a),
        Command::Pull(a) => store::cli::pull(a),
        Command::List(a) => store::cli::list(a),
        Command::Models(a) => store::cli::models(a),
        Command::Doctor(a) => cli::doctor(a),
        Command::Transcribe(a) => engines::stt::cli::transcribe(a),
        Command::Speak(a) => engines::tts::cli::speak(a),
        Command::Bench(a) => bench::run(a),
        Command::Search(a) => harness::cli::search_command(a),
        Command::Quantize(a) => quantize::run(a),
    };
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
