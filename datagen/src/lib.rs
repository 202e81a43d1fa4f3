//! Data for mezcla: audio I/O, NeMo JSON-lines manifests, code-switched data synthesis and TTS corpora.

pub mod atomic;
pub mod audio;
pub mod cs;
pub mod manifest;
pub mod progress;
pub mod tts;
