"""The top floor: orchestration over the stages for the local web app (`service.app`) and the
many-people batch runner on Ray (`service.batch`). It calls train/ and infer/ through their public
functions and reads their files; it holds no stage logic of its own, and nothing below imports it."""
