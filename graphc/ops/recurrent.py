"""Recurrent layers (LSTM, GRU) with their state outputs."""
