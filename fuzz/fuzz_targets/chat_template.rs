//! Chat template detection over any text, and rendering of hostile conversations (special
//! tokens, control characters, huge or empty roles and contents) into small and large buffers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trillim_core::chat::{ChatError, ChatTemplate, Message};

const TEMPLATES: &[&str] = &[
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "{% for message in messages %}{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}",
    "{{- bos_token }}Cutting Knowledge Date<|start_header_id|><|end_header_id|>",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // Any text as a template: detection never panics.
    let _ = ChatTemplate::detect(Some(&text));
    let t = ChatTemplate::detect(Some(TEMPLATES[sel as usize % TEMPLATES.len()])).unwrap();
    let fields: Vec<&str> = text.split('\u{1}').collect();
    let msgs: Vec<Message<'_>> = fields
        .chunks(2)
        .map(|c| Message {
            role: c[0],
            content: c.get(1).copied().unwrap_or(""),
        })
        .collect();
    // Room for every character escaped or repeated, the templates' fixed text once, and each
    // message's role markers (at most ~50 bytes a message in these templates; many short
    // messages need more than the text's length suggests).
    let mut big = vec![0u8; text.len() * 4 + 4096 + msgs.len() * 256];
    let full = t
        .render(
            &msgs,
            sel & 0x80 != 0,
            "<|begin_of_text|>",
            Some("1 Jan 2025"),
            &mut big,
        )
        .expect("a large buffer fits")
        .to_string();
    for m in &msgs {
        assert!(full.contains(trillim_core::chat::py_trim(m.content)));
    }
    // Every smaller buffer fails cleanly or renders the same prefix-free result.
    let cut = (sel as usize * 7) % (full.len() + 1);
    let mut small = vec![0u8; cut];
    match t.render(
        &msgs,
        sel & 0x80 != 0,
        "<|begin_of_text|>",
        Some("1 Jan 2025"),
        &mut small,
    ) {
        Ok(s) => assert_eq!(s, full),
        Err(e) => assert_eq!(e, ChatError::BufferTooSmall),
    }
});
