//! candle modules of the acoustic models (log-mel front-end, Conformer, CTC head); they arrive with the
//! acoustic-model issue, and this crate holds the place they take in the pipeline.
