"""The caption cache: every caption made, kept by picture and captioner, so no picture is captioned twice."""
