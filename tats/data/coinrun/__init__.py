"""MUGEN / CoinRun: episode JSON (:mod:`.game`), the renderer (:mod:`.render`), automatic text
(:mod:`.text`) and the datasets (:mod:`.dataset`)."""
