"""Training set, Spark MLlib training, MLflow registry gates and scoring."""
