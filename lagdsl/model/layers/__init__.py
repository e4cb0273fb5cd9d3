"""The layers a block is made of: norms (`norms`), attention (`attention`), MLPs (`mlp`). Each reads
the model's config (`lagdsl.model.config`); the elementwise passes they share are hand-written in
`lagdsl.model.kernels`."""
