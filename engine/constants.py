"""Audio constants of Whisper, in one place."""

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30  # seconds per window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second
INPUT_STRIDE = 2  # the encoder's convolution halves the frame rate
TOKENS_PER_SECOND = FRAMES_PER_SECOND // INPUT_STRIDE  # 50 encoder positions per second
TIME_PRECISION = 1 / TOKENS_PER_SECOND  # 0.02 s per timestamp token step
# A file decoded in parts (engine.parts): part k numbers its windows from k x this, so that window
# order is time order and each part's windows can be told apart in the catalog.
WINDOW_STRIDE = 100_000
