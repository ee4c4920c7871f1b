with

labels as (

    select * from {{ ref('stg_bronze__labels') }}

),

latest as (

    -- the latest decision wins: by label_time, then by ingestion order
    select
        *,
        count(*) over (partition by transaction_id) as label_count

    from labels

    qualify row_number() over (
        partition by transaction_id
        order by label_time desc, ingested_at desc, kafka_partition desc, kafka_offset desc
    ) = 1

)

select * from latest
