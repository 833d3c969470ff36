"""lstm-jax: LSTM sequence models in JAX and Flax.

The public contract (see README):

    from lstm_jax import LSTM
    outputs, final_state = LSTM(hidden_size=H, num_layers=L).apply(variables, x,
                                                                   seq_lengths=lengths)
"""

from lstm_jax.cells import (GREFF_VARIANTS, GRUCell, LSTMCell, LSTMState, LSTMStructure,
                            RNNState, SimpleRNNCell, greff_variant, gru_step, lstm_step,
                            rnn_step)
from lstm_jax.layers import GRU, LSTM, RNN, SimpleRNN
from lstm_jax.unroll import reverse_valid, scan_steps, valid_mask

__version__ = '0.1.0'
