//! candle modules of the acoustic models: log-mel front-end, Conformer encoder and CTC head.
