"""Training, evaluation, model card and Hub upload for the GenreWiz PCRNN (see README, "Training")."""
