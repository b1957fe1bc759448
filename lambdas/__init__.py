"""Handlers deployable as AWS Lambda functions, reporting to Dagster through Pipes.

* ``validate_batch``: the ingest step's parse, validation and upcasting of landed batches (the
  ``<prefix>-validate-batch`` function), invoked by the ingest asset through dagster-aws's
  ``PipesLambdaClient`` (``resources/lambda_invoke.py``);
* ``run``: the Lambda runtime's part, for running a handler in a subprocess where there is no
  Lambda (the local profile, the tests);
* ``build_zip``: the deployment package (``python -m lambdas.build_zip`` -> ``dist/lambda.zip``).

Nothing here imports Dagster: a handler imports ``dagster_pipes`` (one module, packed into the
zip) and the figstream core.
"""
